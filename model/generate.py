"""Plain autoregressive generation for one prompt over a `StaticKVCache`.

This is the simple path the CLI uses; the batching engine replaces it for serving. Streaming yields
text pieces as soon as they form complete UTF-8 characters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from ember.model.kv_cache import StaticKVCache
from ember.model.llama import Llama
from ember.model.tokenizer import Tokenizer


@dataclass(slots=True)
class GenerationConfig:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False  # generate exactly max_tokens (benchmarks, parity tests)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens} must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0")


@dataclass(slots=True)
class Generation:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float

    @property
    def tokens_per_second(self) -> float:
        n = len(self.token_ids) - 1  # the first token comes from prefill
        return n / self.decode_seconds if n > 0 and self.decode_seconds > 0 else 0.0


def sample(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> int:
    """One token id from (V,) logits."""
    if cfg.temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > cfg.top_p  # keep the smallest set reaching top_p
        logits[order[drop]] = float("-inf")
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


def stop_ids(model: Llama, tokenizer: Tokenizer, cfg: GenerationConfig) -> set[int]:
    ids = set(cfg.stop_token_ids)
    if not cfg.ignore_eos:
        ids |= set(model.config.eos_token_ids)
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def generate_stream(model: Llama, tokenizer: Tokenizer, prompt_ids: list[int],
                    cfg: GenerationConfig) -> Iterator[tuple[int, str]]:
    """Yield (token_id, new_text) per generated token; stops on a stop id or after max_tokens."""
    if not prompt_ids:
        raise ValueError("empty prompt")
    limit = model.config.max_position_embeddings
    if len(prompt_ids) >= limit:
        raise ValueError(f"prompt has {len(prompt_ids)} tokens; the model's context is {limit}")
    max_new = min(cfg.max_tokens, limit - len(prompt_ids))
    cache = StaticKVCache(model.config, 1, len(prompt_ids) + max_new, model.dtype, model.device)
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(cfg.seed)
    stops = stop_ids(model, tokenizer, cfg)
    x = torch.tensor([prompt_ids], device=model.device)
    out: list[int] = []
    emitted = ""
    for _ in range(max_new):
        logits = model(x, cache=cache, last_only=True)[0, -1]
        token = sample(logits, cfg, generator)
        out.append(token)
        if token in stops:
            yield token, ""
            return
        text = tokenizer.decode(out)
        piece = "" if text.endswith("\ufffd") else text[len(emitted):]  # wait for a whole character
        emitted += piece
        yield token, piece
        x = torch.tensor([[token]], device=model.device)


def generate(model: Llama, tokenizer: Tokenizer, prompt_ids: list[int], cfg: GenerationConfig) -> Generation:
    t0 = time.perf_counter()
    ids: list[int] = []
    t_first = t0
    for token, _ in generate_stream(model, tokenizer, prompt_ids, cfg):
        if not ids:
            t_first = time.perf_counter()
        ids.append(token)
    t_end = time.perf_counter()
    stops = stop_ids(model, tokenizer, cfg)
    finish = "stop" if ids and ids[-1] in stops else "length"
    text_ids = ids[:-1] if finish == "stop" else ids
    return Generation(ids, tokenizer.decode(text_ids), finish, len(prompt_ids), t_first - t0, t_end - t_first)
