"""The seam everything above model/ uses to run a language model.

A `Backend` takes prompts (text or token ids) or chat messages plus `SamplingParams`, and returns
`Completion`s or streams `Delta`s. Implementations: `EmberBackend` (our paged engine), `VLLMBackend`
(vLLM's Python API), `OpenAIBackend` (any OpenAI-compatible HTTP server). Methods are synchronous and
thread-safe; an async server calls them from a worker thread (one concurrency model per layer).

What a caller needs beyond text in, text out (the context length, the model's own tokenizer, grammars as
logits processors, log-likelihood scoring, native tool calls, KV-cache usage) is declared in the backend's
`capabilities`, never reached for through its internals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ember.model.errors import EmberError
from ember.model.outputs import Completion, Delta, FinishReason, Timings, TokenLogprob
from ember.model.sampling_params import SamplingParams

if TYPE_CHECKING:
    from ember.model.tokenizer import Tokenizer
    from ember.model.tool_calls import ChatOptions

__all__ = ["Backend", "BackendError", "Capabilities", "Completion", "Delta", "FinishReason", "Message", "Prompt",
           "Timings", "TokenLogprob"]

Prompt = str | list[int]
Message = dict[str, Any]


class BackendError(EmberError):
    """The backend failed (server unreachable, engine crashed, bad response)."""

    http_status = 502


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend offers beyond generating text. The defaults are a remote server's: nothing known."""

    context_length: int | None = None  # prompt + completion tokens the model takes; None = unknown
    tokenizer: Tokenizer | None = None  # the model's tokenizer and chat template, in this process
    vocab_size: int | None = None  # size of the logits a `LogitsProcessor` sees
    eos_ids: tuple[int, ...] = ()  # tokens that end a reply
    logits_processors: bool = False  # honours `SamplingParams.logits_processors` (tool-call grammars)
    scoring_model: Any = None  # the in-process torch model that scores given text (log-likelihoods)
    kv_blocks: Callable[[], tuple[int, int]] | None = None  # (used, total) paged-KV blocks, for metrics
    # `chat`/`chat_stream` take `ChatOptions`: tools (replies carry `tool_calls`) and `response_format`
    tool_calls: bool = False
    structured_outputs: bool = False
    constrained: bool = False  # calls and JSON are grammar-constrained here (else the server behind decides)
    adapter: Path | None = None  # the LoRA folder merged into the weights at load (the refusal bias follows it)

    @property
    def native_tools(self) -> bool:
        """The chat template takes a `tools` list (the model's own tool-call format)."""
        template = self.tokenizer.chat_template if self.tokenizer is not None else None
        return isinstance(template, str) and "tools" in template


@runtime_checkable
class Backend(Protocol):
    name: str

    @property
    def capabilities(self) -> Capabilities:
        """What this backend offers beyond text generation (see `Capabilities`)."""
        ...

    def generate(self, prompts: list[Prompt], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        """Run a batch of requests to completion (concurrently where the backend can)."""
        ...

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Delta]:
        """Stream one request. Closing the iterator early cancels the request and frees its resources."""
        ...

    def chat(self, messages: list[Message], params: SamplingParams, options: ChatOptions | None = None
             ) -> Completion:
        """One assistant reply to a conversation, through the model's chat template. `options` (tools,
        response_format) only where `capabilities.tool_calls` / `structured_outputs` say so."""
        ...

    def chat_stream(self, messages: list[Message], params: SamplingParams, options: ChatOptions | None = None
                    ) -> Iterator[Delta]:
        ...

    def count_tokens(self, text: str) -> int:
        ...

    def close(self) -> None:
        """Release the model, threads, subprocesses or connections."""
        ...
