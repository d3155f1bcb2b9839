"""Ember inside LangChain: a collection as a retriever, any Backend as a chat model, any Embedder as embeddings.

    from ember.retrieval.integrations.langchain import ChatEmber, EmberEmbeddings, EmberRetriever

    llm = ChatEmber(backend=backend, max_tokens=128)
    docs = EmberRetriever(retriever=retriever).invoke("how do I ...?")    # Ember's hybrid search
    for chunk in llm.stream("Hello"): ...

Each class only translates types: searching, generating and embedding are Ember's own code. `bind_tools` and
`with_structured_output` (LangChain's own, through function calling or `json_schema`) go through the backend's
`ChatOptions` (tools, tool_choice, response_format) where its `capabilities` offer them: grammar-constrained
on our engine and vLLM, passed through by the OpenAI-compatible backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from ember.retrieval.integrations import require

_core = require("langchain_core", "langchain-core", "Ember's LangChain adapters")

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.language_models import LanguageModelInput  # noqa: E402
from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.runnables import Runnable  # noqa: E402
from langchain_core.tools import BaseTool  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from pydantic import ConfigDict, Field  # noqa: E402

from ember.model.backends.base import Backend, Completion, Delta, Message  # noqa: E402
from ember.model.errors import InvalidValueError  # noqa: E402
from ember.model.sampling_params import SamplingParams  # noqa: E402
from ember.model.tool_calls import ChatOptions  # noqa: E402
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
        content = m.content if isinstance(m.content, str) else m.text
        if isinstance(m, ToolMessage):
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": content})
            continue
        if m.type not in ROLES:
            raise InvalidValueError(f"ChatEmber cannot send a {m.type!r} message: Ember's backends take system, user, "
                                    "assistant and tool messages")
        message: Message = {"role": ROLES[m.type], "content": content}
        if isinstance(m, AIMessage) and m.tool_calls:
            message["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
                "name": c["name"], "arguments": json.dumps(c["args"], ensure_ascii=False)}} for c in m.tool_calls]
        out.append(message)
    return out


def _options(backend: Backend, kwargs: dict[str, Any]) -> ChatOptions | None:
    """The `ChatOptions` of a call's bound kwargs (tools, tool_choice, parallel_tool_calls, response_format)."""
    kwargs.pop("ls_structured_output_format", None)
    if not any(kwargs.get(k) is not None for k in ("tools", "response_format")):
        return None
    caps = backend.capabilities
    if kwargs.get("tools") and not caps.tool_calls:
        raise InvalidValueError(f"the {backend.name} backend does not offer tool calls")
    if kwargs.get("response_format") is not None and not caps.structured_outputs:
        raise InvalidValueError(f"the {backend.name} backend does not offer structured outputs")
    return ChatOptions.from_openai(kwargs.get("tools"), kwargs.get("tool_choice"), kwargs.get("parallel_tool_calls"),
                                   kwargs.get("response_format"))


def _tool_choice(choice: Any) -> Any:
    """LangChain's spellings ("any", True, a bare tool name) as OpenAI's."""
    if choice in ("any", True):
        return "required"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


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
        options = _options(self.backend, kwargs)
        c = (self.backend.chat(to_messages(messages), self._params(stop), options) if options is not None
             else self.backend.chat(to_messages(messages), self._params(stop)))
        calls = [{"name": t.name, "args": json.loads(t.arguments or "{}"), "id": t.id, "type": "tool_call"}
                 for t in c.tool_calls]
        message = AIMessage(content=c.text, response_metadata=_metadata(c), usage_metadata=_usage(c),
                            tool_calls=calls)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        options = _options(self.backend, kwargs)
        inner: Iterator[Delta] = (
            self.backend.chat_stream(to_messages(messages), self._params(stop), options) if options is not None
            else self.backend.chat_stream(to_messages(messages), self._params(stop)))
        try:
            for d in inner:
                c = d.completion
                pieces: list[Any] = [{"name": t.name, "args": t.arguments, "id": t.id, "index": t.index,
                                      "type": "tool_call_chunk"} for t in d.tool_calls or []]
                msg = (AIMessageChunk(content=d.text, response_metadata=_metadata(c), usage_metadata=_usage(c),
                                      tool_call_chunks=pieces)
                       if c is not None else AIMessageChunk(content=d.text, tool_call_chunks=pieces))
                chunk = ChatGenerationChunk(message=msg)
                if run_manager is not None:
                    run_manager.on_llm_new_token(d.text, chunk=chunk)
                yield chunk
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()  # a consumer that stopped early frees the engine's KV blocks

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | bool | dict[str, Any] | None = None, parallel_tool_calls: bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer `tools` (LangChain tools, pydantic models, functions or OpenAI dicts) on every call;
        `tool_choice`: "auto", "none", "required"/"any"/True, or a tool's name."""
        bound: dict[str, Any] = {"tools": [convert_to_openai_tool(t) for t in tools], **kwargs}
        if tool_choice is not None:
            bound["tool_choice"] = _tool_choice(tool_choice)
        if parallel_tool_calls is not None:
            bound["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(**bound)

    def with_structured_output(self, schema: dict[str, Any] | type, *, include_raw: bool = False,
                               method: Literal["function_calling", "json_schema"] = "function_calling",
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """LangChain's structured output; `method="json_schema"` constrains the reply itself (response_format)."""
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser

        tool = convert_to_openai_tool(schema)["function"]
        fmt = {"type": "json_schema", "json_schema": {"name": tool["name"], "schema": tool["parameters"],
                                                      "strict": True}}
        parser: Any = (PydanticOutputParser(pydantic_object=schema) if isinstance(schema, type)
                       else JsonOutputParser())
        return self.bind(response_format=fmt) | parser


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
