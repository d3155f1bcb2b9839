"""`SamplingParams`: how one request is decoded. Shared by every backend (ours, vLLM, OpenAI-compatible)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ember.model.errors import EmberError

if TYPE_CHECKING:
    from ember.model.logits_processor import LogitsProcessor


class InvalidRequestError(EmberError):
    """A request whose parameters or prompt cannot be served (HTTP 400)."""


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # drop tokens below min_p * p(most likely)
    repetition_penalty: float = 1.0  # HF/vLLM: >1 discourages tokens already in prompt or output
    presence_penalty: float = 0.0  # OpenAI: subtracted once from tokens already in the output
    frequency_penalty: float = 0.0  # OpenAI: subtracted per occurrence in the output
    stop: list[str] = field(default_factory=list)  # stop strings, matched on text (across token edges)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None  # per-request generator: same seed, same output
    logprobs: int | None = None  # None = off; n = chosen token's logprob plus the top n
    # per-request hooks on the logits before sampling (e.g. a grammar matcher); stateful, so one request each
    logits_processors: list[LogitsProcessor] = field(default_factory=list)

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 1, f"max_tokens={self.max_tokens} must be >= 1"),
            (self.temperature >= 0, f"temperature={self.temperature} must be >= 0"),
            (0 < self.top_p <= 1, f"top_p={self.top_p} must be in (0, 1]"),
            (self.top_k >= 0, f"top_k={self.top_k} must be >= 0 (0 = off)"),
            (0 <= self.min_p <= 1, f"min_p={self.min_p} must be in [0, 1]"),
            (self.repetition_penalty > 0, f"repetition_penalty={self.repetition_penalty} must be > 0"),
            (-2 <= self.presence_penalty <= 2, f"presence_penalty={self.presence_penalty} must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, f"frequency_penalty={self.frequency_penalty} must be in [-2, 2]"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, f"logprobs={self.logprobs} must be in [0, 20]"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def penalized(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0
