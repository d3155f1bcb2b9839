"""Ember inside LlamaIndex: a collection as a retriever and as a vector store, any Backend as an LLM, any
Embedder as an embedding model.

    from llama_index.core import Settings, VectorStoreIndex
    from ember.retrieval.integrations.llamaindex import EmberEmbedding, EmberLLM, EmberRetriever, EmberVectorStore

    Settings.llm, Settings.embed_model = EmberLLM(backend), EmberEmbedding(embedder)
    RetrieverQueryEngine.from_args(EmberRetriever(retriever)).query("...")        # Ember's hybrid search
    VectorStoreIndex.from_vector_store(EmberVectorStore(collection)).as_query_engine().query("...")

Each class only translates types: searching, storing, generating and embedding are Ember's own code.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.retrieval.integrations import require

_core = require("llama_index.core", "llama-index-core", "Ember's LlamaIndex adapters")

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback  # noqa: E402
from llama_index.core.llms.custom import CustomLLM  # noqa: E402
from llama_index.core.llms.function_calling import FunctionCallingLLM  # noqa: E402
from llama_index.core.llms.llm import ToolSelection  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import (  # noqa: E402
    BaseNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (  # noqa: E402
    BasePydanticVectorStore,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from ember.model.backends.base import Backend, Completion, Delta, Message  # noqa: E402
from ember.model.errors import InvalidValueError  # noqa: E402
from ember.model.sampling_params import SamplingParams  # noqa: E402
from ember.model.tool_calls import ChatOptions  # noqa: E402
from ember.retrieval import store  # noqa: E402
from ember.retrieval.collection import Collection, PreparedDocument  # noqa: E402
from ember.retrieval.embedders import Embedder, l2_normalize  # noqa: E402
from ember.retrieval.errors import InvalidSearchError  # noqa: E402
from ember.retrieval.retriever import Retriever, SearchFilter  # noqa: E402
from ember.retrieval.tokens import RegexTokenCounter, TokenCounter  # noqa: E402


def to_node(chunk: store.ChunkRow) -> TextNode:
    """An Ember chunk as a LlamaIndex node: same text, the chunk id as node id, the document as its source."""
    meta = {"source": chunk.source, "title": chunk.title, "chunk_id": chunk.id, "page": chunk.page,
            "headings": " › ".join(chunk.headings)}
    hidden = ["chunk_id", "page", "headings"]  # kept for callers, left out of prompts and embeddings
    return TextNode(id_=str(chunk.id), text=chunk.text, metadata=meta, start_char_idx=chunk.start,
                    end_char_idx=chunk.end, excluded_llm_metadata_keys=hidden, excluded_embed_metadata_keys=hidden,
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=chunk.source)})


class EmberRetriever(BaseRetriever):
    """An Ember `Retriever` (dense, BM25 or hybrid over a collection) as a LlamaIndex retriever."""

    def __init__(self, retriever: Retriever, *, mode: str | None = None, k: int | None = None,
                 where: SearchFilter | None = None, **kwargs: Any) -> None:
        self.ember, self.mode, self.k, self.where = retriever, mode, k, where
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.ember.search(query_bundle.query_str, mode=self.mode, k=self.k, where=self.where)
        return [NodeWithScore(node=to_node(h.chunk), score=h.score) for h in hits]


if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool


def to_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """LlamaIndex messages as OpenAI's; tool calls ride in `additional_kwargs` as in LlamaIndex's OpenAI LLM."""
    role = {MessageRole.SYSTEM: "system", MessageRole.USER: "user", MessageRole.ASSISTANT: "assistant",
            MessageRole.TOOL: "tool"}
    out: list[Message] = []
    for m in messages:
        message: Message = {"role": role.get(m.role, str(m.role.value)), "content": m.content or ""}
        calls = m.additional_kwargs.get("tool_calls")
        if m.role == MessageRole.ASSISTANT and calls:
            message["tool_calls"] = [c if isinstance(c, dict) else c.model_dump() for c in calls]
        if m.role == MessageRole.TOOL:
            message["tool_call_id"] = str(m.additional_kwargs.get("tool_call_id", ""))
        out.append(message)
    return out


def _options(backend: Backend, kwargs: dict[str, Any]) -> ChatOptions | None:
    if kwargs.get("tools") is None and kwargs.get("response_format") is None:
        return None
    if not backend.capabilities.tool_calls:
        raise InvalidValueError(f"the {backend.name} backend does not offer tool calls")
    return ChatOptions.from_openai(kwargs.get("tools"), kwargs.get("tool_choice"), kwargs.get("parallel_tool_calls"),
                                   kwargs.get("response_format"))


def _calls(calls: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


class EmberLLM(FunctionCallingLLM, CustomLLM):
    """Any Ember `Backend` (our engine, vLLM, an OpenAI-compatible server) as a LlamaIndex chat LLM.

    `chat`/`stream_chat` go through the model's chat template (`Backend.chat`); `complete` is a raw text
    completion (`Backend.generate`), so LlamaIndex, told `is_chat_model`, sends its prompts as chat messages.
    Function calling (`chat_with_tools`, `predict_and_call`, `FunctionAgent`) goes through the backend's
    `ChatOptions`; the calls come back in `message.additional_kwargs["tool_calls"]`, OpenAI's shape.
    """

    context_window: int = Field(default=2048, description="tokens the model sees: prompt + answer")
    num_output: int = Field(default=256, description="max_tokens of each answer")
    temperature: float = Field(default=0.0, description="0 = greedy")
    model_name: str = Field(default="ember")
    _backend: Backend = PrivateAttr()

    def __init__(self, backend: Backend, **kwargs: Any) -> None:
        super().__init__(**{"model_name": backend.name, **kwargs})
        self._backend = backend

    @classmethod
    def class_name(cls) -> str:
        return "EmberLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.num_output,
                           model_name=self.model_name, is_chat_model=True,
                           is_function_calling_model=self._backend.capabilities.tool_calls)

    def _params(self, stop: list[str] | None = None) -> SamplingParams:
        return SamplingParams(max_tokens=self.num_output, temperature=self.temperature, stop=list(stop or []))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        options = _options(self._backend, kwargs)
        params = self._params(kwargs.get("stop"))
        c = (self._backend.chat(to_messages(messages), params, options) if options is not None
             else self._backend.chat(to_messages(messages), params))
        extra = {"tool_calls": _calls(c.tool_calls)} if c.tool_calls else {}
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=c.text, additional_kwargs=extra),
                            raw=_raw(c))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        options = _options(self._backend, kwargs)
        params = self._params(kwargs.get("stop"))
        inner = (self._backend.chat_stream(to_messages(messages), params, options) if options is not None
                 else self._backend.chat_stream(to_messages(messages), params))

        def gen() -> Generator[ChatResponse, None, None]:
            text = ""
            for d in _closing(inner):
                text += d.text
                calls = d.completion.tool_calls if d.completion is not None else []
                extra = {"tool_calls": _calls(calls)} if calls else {}
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text,
                                                       additional_kwargs=extra), delta=d.text, raw=_raw(d.completion))
        return gen()

    def _prepare_chat_with_tools(self, tools: Sequence[BaseTool], user_msg: str | ChatMessage | None = None,
                                 chat_history: list[ChatMessage] | None = None, verbose: bool = False,
                                 allow_parallel_tool_calls: bool = False, tool_required: bool = False,
                                 **kwargs: Any) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str)
                            else user_msg)
        return {"messages": messages, "tools": [t.metadata.to_openai_tool() for t in tools],
                "tool_choice": "required" if tool_required else "auto",
                "parallel_tool_calls": allow_parallel_tool_calls, **kwargs}

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls") or []
        if not calls and error_on_no_tool_call:
            raise InvalidValueError(f"expected a tool call, got the reply {response.message.content!r}")
        return [ToolSelection(tool_id=c["id"], tool_name=c["function"]["name"],
                              tool_kwargs=json.loads(c["function"]["arguments"] or "{}")) for c in calls]

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        c = self._backend.generate([prompt], self._params(kwargs.get("stop")))[0]
        return CompletionResponse(text=c.text, raw=_raw(c))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        inner = self._backend.stream(prompt, self._params(kwargs.get("stop")))

        def gen() -> Generator[CompletionResponse, None, None]:
            text = ""
            for d in _closing(inner):
                text += d.text
                yield CompletionResponse(text=text, delta=d.text, raw=_raw(d.completion))
        return gen()


def _closing(inner: Iterator[Delta]) -> Iterator[Delta]:
    """Yield the backend's deltas; a consumer that stops early closes the backend stream (frees KV blocks)."""
    try:
        yield from inner
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            close()


def _raw(c: Completion | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens}


class EmberEmbedding(BaseEmbedding):
    """Any Ember `Embedder` (MiniLM offline, a sentence-transformers folder, an OpenAI-compatible server)."""

    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        super().__init__(**{"model_name": embedder.info.model_id, "embed_batch_size": 32, **kwargs})
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "EmberEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.embed([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


class EmberVectorStore(BasePydanticVectorStore):
    """An Ember collection as a LlamaIndex vector store: `VectorStoreIndex` writes its nodes into the collection
    (SQLite + FAISS + BM25, one transaction per `add`) and queries its FAISS index.

    Nodes are grouped into Ember documents by their source document (`ref_doc_id`); adding a document that is
    already there replaces it. The embeddings are LlamaIndex's (`Settings.embed_model`): they must have the
    collection's dimension, and should come from its embedder (`EmberEmbedding(embedder)`) for Ember's own
    searches of the same collection to make sense. Metadata filters are not supported.
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    _collection: Collection = PrivateAttr()
    _counter: TokenCounter = PrivateAttr()

    def __init__(self, collection: Collection, embedder: Embedder | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._collection = collection
        self._counter = embedder.token_counter() if embedder is not None else RegexTokenCounter()

    @classmethod
    def class_name(cls) -> str:
        return "EmberVectorStore"

    @property
    def client(self) -> Collection:
        return self._collection

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        col = self._collection
        groups: dict[str, list[BaseNode]] = {}
        for node in nodes:
            groups.setdefault(node.ref_doc_id or node.node_id, []).append(node)
        with col.lock():
            existing = col.documents()
            docs = [self._document(source, group, existing.get(source)) for source, group in groups.items()]
            ids = col.apply(docs)
            col.save()
        return [str(i) for i in ids]

    def _document(self, source: str, nodes: list[BaseNode], old: store.DocumentRow | None) -> PreparedDocument:
        dim = self._collection.row.dim
        vectors = np.asarray([n.get_embedding() for n in nodes], np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            row = self._collection.row
            raise InvalidSearchError(f"node embeddings have shape {vectors.shape}; collection {row.name!r} holds "
                                     f"{dim}-d vectors of {row.embedder_id}")
        if self._collection.row.normalized:
            vectors = l2_normalize(vectors)
        chunks = []
        for n, (node, vector) in enumerate(zip(nodes, vectors, strict=True)):
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            lo, hi = getattr(node, "start_char_idx", None), getattr(node, "end_char_idx", None)  # TextNode has them
            start = lo if lo is not None else 0
            end = hi if hi is not None else start + len(text)
            chunks.append(store.NewChunk(n, text, start, end, len(self._counter.token_starts(text)),
                                         node.metadata.get("page_label") and _int(node.metadata["page_label"]),
                                         (), vector))
        meta = nodes[0].metadata
        title = str(meta.get("title") or meta.get("file_name") or source.rsplit("/", 1)[-1])
        content = "\x00".join(c.text for c in chunks).encode()  # the nodes' text: no file bytes here
        return PreparedDocument.build(source, title, "llamaindex", content, chunks,
                                      size=sum(len(c.text) for c in chunks),
                                      replaces=old.id if old is not None else None)

    def delete(self, ref_doc_id: str, **kwargs: Any) -> None:
        col = self._collection
        with col.lock():
            doc = col.documents().get(ref_doc_id)
            if doc is not None:
                col.apply([], [doc.id])
                col.save()

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.filters is not None or query.doc_ids or query.node_ids:
            raise NotImplementedError("EmberVectorStore does not filter by metadata or ids; use EmberRetriever "
                                      "with an Ember SearchFilter (source glob, tag)")
        if query.mode != VectorStoreQueryMode.DEFAULT or query.query_embedding is None:
            raise NotImplementedError(f"EmberVectorStore answers dense (default) queries, not {query.mode.value!r}; "
                                      "use EmberRetriever for Ember's BM25 and hybrid search")
        col = self._collection
        col.refresh()
        found = col.search_dense(np.asarray(query.query_embedding, np.float32), query.similarity_top_k)
        rows = col.chunks([i for i, _ in found])
        kept = [(rows[i], s) for i, s in found if i in rows]
        return VectorStoreQueryResult(nodes=[to_node(r) for r, _ in kept], similarities=[s for _, s in kept],
                                      ids=[str(r.id) for r, _ in kept])


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


__all__ = ["EmberEmbedding", "EmberLLM", "EmberRetriever", "EmberVectorStore", "to_node"]
del _core
