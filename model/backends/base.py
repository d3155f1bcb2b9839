"""The seam everything above model/ uses to run a language model.

A `Backend` takes prompts (text or token ids) or chat messages plus `SamplingParams`, and returns
`Completion`s or streams `Delta`s. Implementations: `EmberBackend` (our paged engine), `VLLMBackend`
(vLLM's Python API), `OpenAIBackend` (any OpenAI-compatible HTTP server). Methods are synchronous and
thread-safe; an async server calls them from a worker thread (one concurrency model per layer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ember.model.errors import EmberError
from ember.model.sampling_params import SamplingParams

FinishReason = Literal["stop", "length", "cancelled"]
Prompt = str | list[int]
Message = dict[str, Any]


class BackendError(EmberError):
    """The backend failed (server unreachable, engine crashed, bad response)."""

    http_status = 502


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


@runtime_checkable
class Backend(Protocol):
    name: str

    def generate(self, prompts: list[Prompt], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        """Run a batch of requests to completion (concurrently where the backend can)."""
        ...

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Delta]:
        """Stream one request. Closing the iterator early cancels the request and frees its resources."""
        ...

    def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        """One assistant reply to a conversation, through the model's chat template."""
        ...

    def chat_stream(self, messages: list[Message], params: SamplingParams) -> Iterator[Delta]:
        ...

    def count_tokens(self, text: str) -> int:
        ...

    def close(self) -> None:
        """Release the model, threads, subprocesses or connections."""
        ...
