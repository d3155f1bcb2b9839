"""What generation returns: `Completion`s, streamed `Delta`s, their timings and log-probabilities.

These are below both the engine and the backends (`model/engine` builds them, `model/backends` hands them
to callers), so the engine imports nothing from `model/backends`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call of a reply (OpenAI's `tool_calls` entry): `arguments` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class ToolCallDelta:
    """A streamed piece of the `index`-th call: the first carries `id` and `name`, later ones argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: dict[int, float] = field(default_factory=dict)  # the top-n alternatives: id -> logprob


@dataclass(slots=True)
class Timings:
    queued_s: float = 0.0  # submitted -> first scheduled
    first_token_s: float = 0.0  # submitted -> first token (TTFT)
    total_s: float = 0.0  # submitted -> finished

    @property
    def decode_tokens_per_s(self) -> float:
        return 0.0 if self.total_s <= self.first_token_s else 1.0 / (self.total_s - self.first_token_s)


@dataclass(slots=True)
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    timings: Timings = field(default_factory=Timings)
    logprobs: list[TokenLogprob] | None = None
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    tool_calls: list[ToolCall] = field(default_factory=list)  # `text` is then the content beside the calls

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tokens_per_s(self) -> float:
        n = self.completion_tokens - 1
        d = self.timings.total_s - self.timings.first_token_s
        return n / d if n > 0 and d > 0 else 0.0


@dataclass(slots=True)
class Delta:
    """A piece of a streamed completion. The last one has `finish_reason` set and `completion` filled."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    completion: Completion | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCallDelta] | None = None
