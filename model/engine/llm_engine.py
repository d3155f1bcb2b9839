"""`LLMEngine`: requests in, tokens out, one synchronous `step()` at a time (nano-vllm's shape).

    engine = LLMEngine(model, tokenizer, EngineConfig(kv_cache_bytes=1 << 30))
    completions = engine.generate([ids_a, ids_b], SamplingParams(temperature=0))

`step()` schedules a batch (continuous batching with preemption), runs one forward pass over the paged
cache, samples, detokenizes and finishes sequences. Callers that need concurrency (the `ember` backend)
drive `step()` from one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ember.model.engine.block_manager import BlockManager
from ember.model.engine.detokenizer import IncrementalDetokenizer
from ember.model.engine.paged_cache import PagedKVCache
from ember.model.engine.runner import ModelRunner
from ember.model.engine.sampler import logprobs_of, sample
from ember.model.engine.scheduler import Scheduler, SchedulerConfig
from ember.model.engine.sequence import Sequence
from ember.model.errors import InvalidValueError
from ember.model.llama import Llama
from ember.model.outputs import Completion, Timings
from ember.model.sampling_params import InvalidRequestError, SamplingParams
from ember.model.tokenizer import Tokenizer


@dataclass(slots=True)
class EngineConfig:
    kv_cache_bytes: int = 1 << 30  # memory budget of the KV pool
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 4096
    max_model_len: int | None = None  # None = the model's max_position_embeddings (capped at 32k)
    enable_prefix_caching: bool = True
    truncate_prompt: bool = False  # keep the last tokens of a too-long prompt instead of refusing it
    kv_cache_dtype: str = "auto"  # auto = the model's dtype; bfloat16 / float16 halve an fp32 model's cache

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.kv_cache_bytes < 1:
            raise InvalidValueError("block_size and kv_cache_bytes must be positive")
        if self.kv_cache_dtype not in KV_DTYPES:
            raise InvalidValueError(f"kv_cache_dtype={self.kv_cache_dtype!r}: use one of {', '.join(KV_DTYPES)}")

    def cache_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        return model_dtype if self.kv_cache_dtype == "auto" else getattr(torch, self.kv_cache_dtype)


KV_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(slots=True)
class StepOutput:
    seq: Sequence
    new_token_ids: list[int]
    text: str  # new text safe to stream
    finished: bool
    error: str | None = None  # this request alone failed (its sampling raised); it is finished, blocks freed


class LLMEngine:
    def __init__(self, model: Llama, tokenizer: Tokenizer, config: EngineConfig | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config = config or EngineConfig()
        mc = model.config
        kv_dtype = config.cache_dtype(model.dtype)
        per_block = PagedKVCache.bytes_per_token(mc, kv_dtype) * config.block_size
        num_blocks = config.kv_cache_bytes // per_block
        capacity = num_blocks * config.block_size
        # unset: the model's context, capped at 32k and at what the pool holds
        self.max_model_len = min(config.max_model_len or min(mc.max_position_embeddings, 32768, capacity),
                                 mc.max_position_embeddings)
        if capacity < self.max_model_len or num_blocks < 2:
            raise InvalidRequestError(
                f"kv_cache_bytes={config.kv_cache_bytes} holds {capacity} tokens, fewer "
                f"than max_model_len={self.max_model_len}",
                hint="Raise the KV-cache budget or lower max_model_len.")
        self.cache = PagedKVCache(mc, num_blocks, config.block_size, kv_dtype, model.device)
        self.blocks = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(SchedulerConfig(config.max_num_seqs,
                                                   max(config.max_num_batched_tokens, self.max_model_len),
                                                   self.max_model_len), self.blocks)
        self.runner = ModelRunner(model, self.cache)
        self.eos_ids = set(mc.eos_token_ids) | ({tokenizer.eos_token_id} - {None})
        self.detok: dict[int, IncrementalDetokenizer] = {}

    # ---- requests ----------------------------------------------------------------------------------
    def add_request(self, prompt: str | list[int], params: SamplingParams) -> Sequence:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise InvalidRequestError("empty prompt")
        limit = self.max_model_len - 1  # room for at least one new token
        if len(ids) > limit:
            if not self.config.truncate_prompt:
                raise InvalidRequestError(
                    f"prompt has {len(ids)} tokens; this model's context is {self.max_model_len} "
                    f"(at most {limit} prompt tokens)", hint="Shorten the prompt or enable truncation.")
            ids = ids[-limit:]
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab})")
        seq = Sequence(ids, params, self.config.block_size)
        self.detok[seq.seq_id] = IncrementalDetokenizer(self.tokenizer, params.stop)
        self.scheduler.add(seq)
        return seq

    def abort(self, seq: Sequence) -> None:
        if not seq.is_finished:
            seq.finish_reason = "cancelled"
            seq.finished_at = time.perf_counter()
            seq.text = self.detok.pop(seq.seq_id).text
            self.scheduler.abort(seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # ---- the loop --------------------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        batch = self.scheduler.schedule()
        if not batch:
            return []
        seqs = batch.seqs
        logits = self.runner.run(batch)
        tokens = sample(logits, seqs)
        now = time.perf_counter()
        outputs = []
        for row, seq, token in zip(logits, seqs, tokens, strict=True):
            if isinstance(token, Exception):  # one request's failure fails that request only
                self.abort(seq)
                outputs.append(StepOutput(seq, [], "", True, f"{type(token).__name__}: {token}"))
                continue
            seq.num_computed_tokens = len(seq)
            self.blocks.commit_full_blocks(seq)
            if seq.params.logprobs is not None:
                seq.logprobs.append(logprobs_of(row, token, seq.params.logprobs, self.tokenizer.decode))
            seq.token_ids.append(token)
            if seq.first_token is None:
                seq.first_token = now
            outputs.append(self._process(seq, token, now))
        return outputs

    def _process(self, seq: Sequence, token: int, now: float) -> StepOutput:
        p, detok = seq.params, self.detok[seq.seq_id]
        reason = None
        if token in p.stop_token_ids or (token in self.eos_ids and not p.ignore_eos) or detok.add(token):
            reason = "stop"
        elif seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
            reason = "length"
        if reason is None:
            return StepOutput(seq, [token], detok.pop_delta(), False)
        seq.finish_reason = reason
        seq.finished_at, seq.text = now, detok.text
        del self.detok[seq.seq_id]
        self.scheduler.finish(seq)
        return StepOutput(seq, [token], detok.pop_delta(final=True), True)

    def completion(self, seq: Sequence) -> Completion:
        assert seq.finish_reason is not None
        end = seq.finished_at or time.perf_counter()
        timings = Timings(
            queued_s=(seq.first_scheduled or end) - seq.arrival,
            first_token_s=(seq.first_token or end) - seq.arrival,
            total_s=end - seq.arrival,
        )
        return Completion(text=seq.text, token_ids=seq.output_ids, finish_reason=seq.finish_reason,
                          prompt_tokens=seq.num_prompt_tokens, timings=timings,
                          logprobs=seq.logprobs if seq.params.logprobs is not None else None,
                          cached_tokens=seq.prompt_cached_tokens)

    def generate(self, prompts: list[str | list[int]], params: SamplingParams | list[SamplingParams],
                 on_step: Callable[[int], None] | None = None) -> list[Completion]:
        """Run a batch offline to completion. `on_step(n_finished_now)` drives a progress bar."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        seqs = [self.add_request(p, sp) for p, sp in zip(prompts, plist, strict=True)]
        try:
            while self.has_unfinished():
                outputs = self.step()
                failed = next((o for o in outputs if o.error), None)
                if failed is not None:
                    raise InvalidRequestError(f"sampling failed: {failed.error}")
                done = sum(o.finished for o in outputs)
                if on_step:
                    on_step(done)
        except BaseException:
            for s in seqs:
                self.abort(s)
            raise
        return [self.completion(s) for s in seqs]

    def stats(self) -> dict[str, int]:
        return {"blocks_total": len(self.blocks.blocks), "blocks_used": self.blocks.num_used,
                "prefix_cache_hits": self.blocks.hits, "waiting": len(self.scheduler.waiting),
                "running": len(self.scheduler.running)}


def torch_threads(n: int | None) -> None:
    torch.set_num_threads(n or torch.get_num_threads())
