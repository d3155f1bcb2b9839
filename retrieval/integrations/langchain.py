"""Ember inside LangChain: a collection as a retriever, any Backend as a chat model, any Embedder as embeddings.

    from ember.retrieval.integrations.langchain import ChatEmber, EmberEmbeddings, EmberRetriever

    llm = ChatEmber(backend=backend, max_tokens=128)
    docs = EmberRetriever(retriever=retriever).invoke("how do I ...?")    # Ember's hybrid search
    for chunk in llm.stream("Hello"): ...

Each class only translates types: searching, generating and embedding are Ember's own code. Tool calling is
not offered: Ember's `Backend` seam has no tools parameter (and SmolLM2's chat template has no tool slot), so
`bind_tools` raises and points to `ember.agents`, whose ReAct loop does tool calls with any backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ember.retrieval.integrations import require

_core = require("langchain_core", "langchain-core", "Ember's LangChain adapters")

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict, Field  # noqa: E402

from ember.model.backends.base import Backend, Completion, Delta, Message  # noqa: E402
from ember.model.errors import InvalidValueError  # noqa: E402
from ember.model.sampling_params import SamplingParams  # noqa: E402
from ember.retrieval.embedders import Embedder  # noqa: E402
from ember.retrieval.retriever import Retriever, SearchFilter  # noqa: E402
from ember.retrieval.store import ChunkRow  # noqa: E402

ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_document(chunk: ChunkRow, score: float) -> Document:
    meta = {"source": chunk.source, "title": chunk.title, "chunk_id": chunk.id, "start": chunk.start,
            "end": chunk.end, "page": chunk.page, "headings": list(chunk.headings), "score": score}
    return Document(page_content=chunk.text, metadata=meta, id=str(chunk.id))


class EmberRetriever(BaseRetriever):
    """An Ember `Retriever` (dense, BM25 or hybrid over a collection) as a LangChain retriever."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    retriever: Retriever
    mode: str | None = None  # default: the Retriever's own
    k: int | None = None
    where: SearchFilter | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.retriever.search(query, mode=self.mode, k=self.k, where=self.where)
        return [to_document(h.chunk, h.score) for h in hits]


def to_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        if m.type not in ROLES:
            raise InvalidValueError(f"ChatEmber cannot send a {m.type!r} message: Ember's backends take system, user "
                                    "and assistant messages (no tool calls; see ChatEmber.bind_tools)")
        out.append({"role": ROLES[m.type], "content": m.content if isinstance(m.content, str) else m.text})
    return out


class ChatEmber(BaseChatModel):
    """Any Ember `Backend` (our engine, vLLM, an OpenAI-compatible server) as a LangChain chat model."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    backend: Backend = Field(exclude=True)
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy

    @property
    def _llm_type(self) -> str:
        return f"ember-{self.backend.name}"

    def _params(self, stop: list[str] | None) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, stop=list(stop or []))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        c = self.backend.chat(to_messages(messages), self._params(stop))
        message = AIMessage(content=c.text, response_metadata=_metadata(c), usage_metadata=_usage(c))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        inner: Iterator[Delta] = self.backend.chat_stream(to_messages(messages), self._params(stop))
        try:
            for d in inner:
                c = d.completion
                msg = (AIMessageChunk(content=d.text, response_metadata=_metadata(c), usage_metadata=_usage(c))
                       if c is not None else AIMessageChunk(content=d.text))
                chunk = ChatGenerationChunk(message=msg)
                if run_manager is not None:
                    run_manager.on_llm_new_token(d.text, chunk=chunk)
                yield chunk
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()  # a consumer that stopped early frees the engine's KV blocks

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        raise NotImplementedError(
            "ChatEmber does not bind tools: Ember's Backend seam has no tools parameter, and the default model's "
            "(SmolLM2) chat template has no tool slot. Use ember.agents (a ReAct loop with constrained tool calls "
            "that works with any Ember backend) for tool use.")


def _metadata(c: Completion) -> dict[str, Any]:
    return {"finish_reason": c.finish_reason, "model_name": "ember"}


def _usage(c: Completion) -> Any:
    return {"input_tokens": c.prompt_tokens, "output_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


class EmberEmbeddings(Embeddings):
    """Any Ember `Embedder` as LangChain embeddings."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text])[0].tolist()


__all__ = ["ChatEmber", "EmberEmbeddings", "EmberRetriever", "to_document"]
del _core
