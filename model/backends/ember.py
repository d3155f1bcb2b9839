"""`EmberBackend`: our paged engine behind the `Backend` Protocol, shared by concurrent callers.

One daemon thread owns the `LLMEngine` and runs its step loop while there is work; callers on any thread
submit requests through a queue and receive `StepOutput`s on a per-request queue. So requests from many
threads (the HTTP server's workers) are batched together continuously, and a caller that stops reading a
stream aborts its request, which frees its KV blocks at the next step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from ember.model import tool_calls
from ember.model.backends.base import BackendError, Capabilities, Completion, Delta, Message, Prompt
from ember.model.engine.llm_engine import EngineConfig, LLMEngine, StepOutput
from ember.model.engine.sequence import Sequence
from ember.model.llama import Llama
from ember.model.sampling_params import SamplingParams
from ember.model.tokenizer import Tokenizer
from ember.model.tool_calls import ChatOptions

_STOP = object()


class _Request:
    def __init__(self, prompt: Prompt, params: SamplingParams) -> None:
        self.prompt, self.params = prompt, params
        self.out: queue.SimpleQueue[StepOutput | BaseException] = queue.SimpleQueue()
        self.seq: Sequence | None = None
        self.cancelled = False


class EmberBackend:
    name = "ember"

    def __init__(self, model: Llama, tokenizer: Tokenizer, config: EngineConfig | None = None,
                 adapter: Path | None = None) -> None:
        self.tokenizer = tokenizer
        self.engine = LLMEngine(model, tokenizer, config)
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._live: dict[int, _Request] = {}
        self._thread = threading.Thread(target=self._loop, name="ember-engine", daemon=True)
        self._closed = False
        self._thread.start()
        e = self.engine
        self.capabilities = Capabilities(
            context_length=e.max_model_len, tokenizer=tokenizer, vocab_size=e.model.config.vocab_size,
            eos_ids=tuple(sorted(e.eos_ids)), logits_processors=True, scoring_model=e.model,
            kv_blocks=lambda: (e.blocks.num_used, len(e.blocks.blocks)), tool_calls=True, structured_outputs=True,
            constrained=True, adapter=adapter)

    @classmethod
    def from_path(cls, path: str | Path, dtype: str = "auto", device: str = "cpu",
                  config: EngineConfig | None = None, quantization: str = "none",
                  adapter: Path | None = None) -> EmberBackend:
        from ember.model.loader import load_for_inference

        lm = load_for_inference(path, dtype=dtype, device=device, quantization=quantization, adapter=adapter)
        return cls(lm.model, lm.tokenizer, config, adapter)

    # ---- engine thread -----------------------------------------------------------------------------
    def _admit(self, item: object) -> bool:
        if item is _STOP:
            return False
        if isinstance(item, _Request):
            if item.cancelled:
                return True
            try:
                item.seq = self.engine.add_request(item.prompt, item.params)
                self._live[item.seq.seq_id] = item
            except BaseException as e:  # invalid request: hand the error to its caller
                item.out.put(e)
        elif isinstance(item, tuple) and item[0] == "abort":
            req: _Request = item[1]
            if req.seq is not None and req.seq.seq_id in self._live:
                self.engine.abort(req.seq)
                req.out.put(StepOutput(req.seq, [], "", True))
                del self._live[req.seq.seq_id]
        return True

    def _loop(self) -> None:
        while True:
            try:  # block only when idle; between steps take everything that arrived
                item = self._inbox.get(block=not self.engine.has_unfinished())
                if not self._admit(item):
                    return
                continue
            except queue.Empty:
                pass
            try:
                outputs = self.engine.step()
            except BaseException as e:  # the forward pass (a bug, OOM): fail every live request, never hang them
                # (a failure in one request's own sampling fails that request only: `StepOutput.error`)
                for req in self._live.values():
                    if req.seq is not None:
                        self.engine.abort(req.seq)
                    req.out.put(BackendError(f"the engine failed: {type(e).__name__}: {e}"))
                self._live.clear()
                continue
            for o in outputs:
                owner = self._live.get(o.seq.seq_id)
                if owner is not None:
                    owner.out.put(BackendError(f"the request failed: {o.error}") if o.error else o)
                    if o.finished:
                        del self._live[o.seq.seq_id]

    # ---- caller side -------------------------------------------------------------------------------
    def _submit(self, prompt: Prompt, params: SamplingParams) -> _Request:
        if self._closed:
            raise BackendError("the backend is closed")
        req = _Request(prompt, params)
        self._inbox.put(req)
        return req

    def _next(self, req: _Request) -> StepOutput:
        item = req.out.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _drain(self, req: _Request) -> Completion:
        while not self._next(req).finished:
            pass
        assert req.seq is not None
        return self.engine.completion(req.seq)

    def generate(self, prompts: list[Prompt], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        plist = params if isinstance(params, list) else [params] * len(prompts)
        reqs = [self._submit(p, sp) for p, sp in zip(prompts, plist, strict=True)]
        try:
            return [self._drain(r) for r in reqs]
        except BaseException:
            for r in reqs:
                self._cancel(r)
            raise

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Delta]:
        req = self._submit(prompt, params)
        done = False
        try:
            while True:
                o = self._next(req)
                if o.finished:
                    done = True
                    assert req.seq is not None
                    c = self.engine.completion(req.seq)
                    yield Delta(o.text, o.new_token_ids, c.finish_reason, c, c.logprobs[-1:] if c.logprobs else None)
                    return
                lp = req.seq.logprobs[-1:] if req.seq is not None and req.seq.logprobs else None
                yield Delta(o.text, o.new_token_ids, logprobs=lp)
        finally:
            if not done:
                self._cancel(req)

    def _cancel(self, req: _Request) -> None:
        req.cancelled = True
        self._inbox.put(("abort", req))

    def _chat_prompt(self, messages: list[Message]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def chat(self, messages: list[Message], params: SamplingParams, options: ChatOptions | None = None
             ) -> Completion:
        if options is not None:
            return tool_calls.collect(self.chat_stream(messages, params, options))
        return self.generate([self._chat_prompt(messages)], params)[0]

    def chat_stream(self, messages: list[Message], params: SamplingParams, options: ChatOptions | None = None
                    ) -> Iterator[Delta]:
        if options is None:
            return self.stream(self._chat_prompt(messages), params)
        prompt, params = self._constrained(messages, params, options)
        return tool_calls.parse_stream(self.stream(prompt, params), options)

    def _constrained(self, messages: list[Message], params: SamplingParams, options: ChatOptions
                     ) -> tuple[list[int], SamplingParams]:
        """The prompt with the tools (native template or the system-prompt block) and the reply's grammar."""
        from dataclasses import replace

        from ember.model.grammar import GrammarProcessor, compile_lark

        c = self.capabilities
        chat, tools = tool_calls.render_messages(messages, options, c.native_tools)
        text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tools=tools)
        lark = tool_calls.lark_grammar(options, tool_calls.tag_rules(self.tokenizer))
        if lark is not None:
            assert c.vocab_size is not None
            grammar, tok = compile_lark(lark, self.tokenizer, c.vocab_size, c.eos_ids,
                                        "grammar for these tools / response_format")
            procs = [GrammarProcessor.of(grammar, tok, c.vocab_size)]
            if options.calls_allowed and options.parallel_tool_calls:
                procs.append(tool_calls.RepeatStop(self.tokenizer, c.eos_ids))
            params = replace(params, logits_processors=[*params.logits_processors, *procs])
        return self.tokenizer.encode(text, add_special_tokens=False), params

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(_STOP)
            self._thread.join(timeout=10)

    def __enter__(self) -> EmberBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

