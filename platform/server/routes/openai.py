"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

A chat goes to the RAG pipeline when the model is `ember-rag:NAME` or the body names a `collection`; the
answer then carries `citations` (and `ember`: the retrieval query, dropped chunk ids, no_context) as extra
fields, which the official client keeps (`completion.citations`, `chunk.model_extra`), and a request that
omits `temperature` is answered greedily (elsewhere omitted means OpenAI's 1.0). Generation runs on a
worker thread; the first item is awaited before the response starts, so errors are clean HTTP errors; a
client that goes away mid-stream cancels the generation (see `streaming.py`).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ember.model.backends.base import Completion, Delta, Message
from ember.model.outputs import ToolCallDelta
from ember.model.tool_calls import ChatOptions, ToolsError
from ember.platform.server.errors import ApiError, error_payload
from ember.platform.server.limiter import Slot
from ember.platform.server.schemas import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    NamedToolChoice,
    Sampling,
    usage,
)
from ember.platform.server.state import RAG_PREFIX, ServerState
from ember.platform.server.streaming import ClientGone, iterate_in_thread, run_until_disconnect
from ember.platform.server.users import Principal
from ember.retrieval.embedders import MINILM_ALIASES
from ember.retrieval.rag import RagAnswer

router = APIRouter()


def state_of(request: Request) -> ServerState:
    return request.app.state.ember


def principal_of(request: Request) -> Principal:
    """Who the request acts for (set by the auth middleware, app.py, on every route that needs a key)."""
    return request.state.principal


def _model_list(st: ServerState, who: Principal) -> list[dict[str, Any]]:
    created = int(st.started)
    names = [st.model_name, *(RAG_PREFIX + n for n in st.users.readable(who, st.collection_names())),
             st.settings.retrieval.embedder]
    return [{"id": n, "object": "model", "created": created, "owned_by": "ember"} for n in names]


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    st = state_of(request)
    return {"object": "list", "data": await run_in_threadpool(_model_list, st, principal_of(request))}


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request) -> dict[str, Any]:
    for m in await run_in_threadpool(_model_list, state_of(request), principal_of(request)):
        if m["id"] == model:
            return m
    raise ApiError(404, f"the model {model!r} does not exist", code="model_not_found", param="model")


def _check_model(st: ServerState, model: str) -> None:
    if model != st.model_name:
        raise ApiError(404, f"the model {model!r} does not exist; this server runs {st.model_name!r} "
                            f"(and {RAG_PREFIX}NAME for a collection)", code="model_not_found", param="model")


def _sse(payload: dict[str, Any] | str) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


async def _start(st: ServerState, make: Callable[[], Iterator[Any]]) -> tuple[Slot, AsyncIterator[Any], Any]:
    """Take a slot (or 429), start the generation and wait for its first item (errors surface here)."""
    slot = await st.limiter.acquire()
    cancelled = lambda: setattr(st.metrics, "cancelled", st.metrics.cancelled + 1)
    items = iterate_in_thread(make, on_cancel=cancelled)
    try:
        first = await items.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        slot.release()
        raise
    return slot, items, first


async def _rest(first: Any, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    if first is not None:
        yield first
        async for item in items:
            yield item


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatRequest, request: Request) -> Any:
    st, who = state_of(request), principal_of(request)
    collection = req.collection or (req.model[len(RAG_PREFIX):] if req.model.startswith(RAG_PREFIX) else None)
    if not collection:
        _check_model(st, req.model)
    else:
        await run_in_threadpool(st.users.check_read, who, collection)
    params = req.params(st.settings.server.max_tokens, default_temperature=0.0 if collection else 1.0)
    if req.max_completion_tokens:
        params = replace(params, max_tokens=req.max_completion_tokens)
    _check_max_tokens(st, params.max_tokens, "max_completion_tokens" if req.max_completion_tokens else "max_tokens")
    messages: list[Message] = [_message(m) for m in req.messages]
    if messages[-1]["role"] not in ("user", "tool"):
        raise ApiError(400, "the last message must be the user's (or a tool result)", param="messages")
    options = _options(st, req)
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if req.session_id:
        stored = await run_in_threadpool(st.sessions.history, req.session_id, who.name)
        system = [m for m in messages if m["role"] == "system"]
        messages = [*system, *stored, messages[-1]]
    rid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
    rag = await run_in_threadpool(st.rag, collection) if collection else None
    asked = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), len(messages) - 1)
    history = [m for m in messages[:asked] if m["role"] in ("user", "assistant")]
    followup = messages[asked + 1:]  # a tool round trip: the assistant's calls and their results
    head = {"id": rid, "created": created, "model": req.model}

    def finish(text: str, final: Any) -> tuple[dict[str, Any], Completion | None]:
        """The fields after the text: finish reason, usage, citations; and the session turn saved."""
        completion = final.completion if isinstance(final, RagAnswer) else final
        extra: dict[str, Any] = {}
        if isinstance(final, RagAnswer):
            extra["citations"] = [c.to_dict() for c in final.citations]
            extra["ember"] = {"collection": collection, "query": final.query, "no_context": final.no_context,
                              "dropped_chunk_ids": final.dropped_chunk_ids, "dropped_turns": final.dropped_turns,
                              "refused": final.refused, "cited_chunk_ids": [c.chunk_id for c in final.cited]}
        if req.session_id and messages[-1]["role"] == "user":
            st.sessions.append(req.session_id, question, text, extra.get("citations"), who.name)
            extra.setdefault("ember", {})["session_id"] = req.session_id
        if completion is not None:
            st.metrics.tokens(completion.prompt_tokens, completion.completion_tokens)
        return extra, completion

    if not req.stream:  # one worker call (no per-token hops between threads), cancelled if the client leaves
        def run(cancel: threading.Event) -> tuple[str, dict[str, Any], Completion | None]:
            it: Iterator[Any] = (rag.stream(question, history, params, options=options, followup=followup)
                                 if rag is not None
                                 else _chat_stream(st, messages, params, options))
            text, final = "", None
            try:
                for item in it:
                    if cancel.is_set():
                        raise ClientGone()
                    if isinstance(item, Delta):
                        text += item.text
                        final = item.completion or final
                    else:
                        final = item
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()  # on cancel: the engine aborts the request and frees its KV blocks
            extra, completion = finish(text, final)
            return text, extra, completion

        slot = await st.limiter.acquire()
        try:
            text, extra, completion = await run_until_disconnect(request, run)
        except ClientGone:
            st.metrics.cancelled += 1
            return Response(status_code=499)  # nobody is listening any more
        finally:
            slot.release()
        reason = completion.finish_reason if completion is not None else "stop"
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if completion is not None and completion.tool_calls:
            message = {"role": "assistant", "content": completion.text or None,
                       "tool_calls": [{"id": c.id, "type": "function",
                                       "function": {"name": c.name, "arguments": c.arguments}}
                                      for c in completion.tool_calls]}
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "stop" if reason == "cancelled" else reason, "logprobs": None}],
                "usage": usage(completion.prompt_tokens if completion else 0,
                               completion.completion_tokens if completion else 0), **extra}

    make: Callable[[], Iterator[Any]] = (
        (lambda: rag.stream(question, history, params, options=options, followup=followup)) if rag is not None
        else (lambda: _chat_stream(st, messages, params, options)))
    slot, items, first = await _start(st, make)

    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def body() -> AsyncIterator[bytes]:
        chunk = {**head, "object": "chat.completion.chunk"}
        try:
            yield _sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "finish_reason": None}]})
            text, final = "", None
            async for item in _rest(first, items):
                if isinstance(item, Delta):
                    text += item.text
                    final = item.completion or final
                    if item.text:
                        yield _sse({**chunk, "choices": [{"index": 0, "delta": {"content": item.text},
                                                          "finish_reason": None}]})
                    if item.tool_calls:
                        yield _sse({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [
                            _call_delta(d) for d in item.tool_calls]}, "finish_reason": None}]})
                else:
                    final = item
            extra, completion = await run_in_threadpool(finish, text, final)
            reason = completion.finish_reason if completion is not None else "stop"
            yield _sse({**chunk, "choices": [{"index": 0, "delta": {},
                                              "finish_reason": "stop" if reason == "cancelled" else reason}],
                        **extra})
            if include_usage:
                yield _sse({**chunk, "choices": [], "usage": usage(completion.prompt_tokens if completion else 0,
                                                                   completion.completion_tokens if completion else 0)})
            yield _sse("[DONE]")
        except Exception as e:  # headers are sent: report the error in the stream
            _, payload, _ = error_payload(e)
            yield _sse(payload)
        finally:
            slot.release()

    return StreamingResponse(body(), media_type="text/event-stream", background=BackgroundTask(slot.release),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _message(m: ChatMessage) -> Message:
    """A request message as the backends take it: OpenAI's shape, `developer` read as `system`."""
    out: Message = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
    if m.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None and m.role == "tool":
        out["name"] = m.name
    return out


def _options(st: ServerState, req: ChatRequest) -> ChatOptions | None:
    """The request's tools and response_format, checked (400 naming the field), or None when it has neither."""
    if not req.tools and req.response_format is None and req.tool_choice is None:
        return None
    try:
        options = ChatOptions.from_openai(
            [t.model_dump(exclude_none=True) for t in req.tools or []],
            req.tool_choice.model_dump() if isinstance(req.tool_choice, NamedToolChoice) else req.tool_choice,
            req.parallel_tool_calls,
            req.response_format.model_dump(by_alias=True, exclude_none=True) if req.response_format else None)
    except ToolsError as e:
        raise ApiError(400, str(e), code="invalid_request", param=e.param) from None
    caps = st.backend.capabilities
    if options.tools and not caps.tool_calls:
        raise ApiError(400, f"the {st.backend.name} backend does not support tools", param="tools")
    if options.response_format is not None and not caps.structured_outputs:
        raise ApiError(400, f"the {st.backend.name} backend does not support response_format", param="response_format")
    return options if options.tools or options.response_format is not None else None


def _chat_stream(st: ServerState, messages: list[Message], params: Any, options: ChatOptions | None
                 ) -> Iterator[Delta]:
    if options is None:
        return st.backend.chat_stream(messages, params)
    return st.backend.chat_stream(messages, params, options)


def _call_delta(d: ToolCallDelta) -> dict[str, Any]:
    """One streamed tool-call piece as OpenAI sends it: index, then id/type/name once, then argument text."""
    out: dict[str, Any] = {"index": d.index}
    if d.id is not None:
        out.update(id=d.id, type="function", function={"name": d.name, "arguments": d.arguments})
    else:
        out["function"] = {"arguments": d.arguments}
    return out


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request) -> Any:
    st = state_of(request)
    _check_model(st, req.model)
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if len(prompts) != 1:
        raise ApiError(400, "send one prompt per request", param="prompt")
    prompt = prompts[0]
    params = _sampling(req, st)
    head = {"id": "cmpl-" + uuid.uuid4().hex[:24], "created": int(time.time()), "model": req.model}
    prefix = prompt if req.echo else ""

    if not req.stream:  # like chat: one worker call, cancelled (KV blocks freed) when the client leaves
        def run(cancel: threading.Event) -> Completion:
            it = st.backend.stream(prompt, params)
            final: Completion | None = None
            try:
                for d in it:
                    if cancel.is_set():
                        raise ClientGone()
                    final = d.completion or final
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            if final is None:
                raise ApiError(502, "the backend ended the completion without a result", code="backend_error")
            return final

        slot = await st.limiter.acquire()
        try:
            completion = await run_until_disconnect(request, run)
        except ClientGone:
            st.metrics.cancelled += 1
            return Response(status_code=499)
        finally:
            slot.release()
        st.metrics.tokens(completion.prompt_tokens, completion.completion_tokens)
        return {**head, "object": "text_completion",
                "choices": [{"index": 0, "text": prefix + completion.text, "logprobs": None,
                             "finish_reason": completion.finish_reason}],
                "usage": usage(completion.prompt_tokens, completion.completion_tokens)}

    slot, items, first = await _start(st, lambda: st.backend.stream(prompt, params))

    async def body() -> AsyncIterator[bytes]:
        chunk = {**head, "object": "text_completion"}
        try:
            if prefix:
                yield _sse({**chunk, "choices": [{"index": 0, "text": prefix, "logprobs": None,
                                                  "finish_reason": None}]})
            async for d in _rest(first, items):
                if d.completion is not None:
                    st.metrics.tokens(d.completion.prompt_tokens, d.completion.completion_tokens)
                yield _sse({**chunk, "choices": [{"index": 0, "text": d.text, "logprobs": None,
                                                  "finish_reason": d.finish_reason}]})
            yield _sse("[DONE]")
        except Exception as e:
            _, payload, _ = error_payload(e)
            yield _sse(payload)
        finally:
            slot.release()

    return StreamingResponse(body(), media_type="text/event-stream", background=BackgroundTask(slot.release))


def _sampling(req: Sampling, st: ServerState) -> Any:
    params = req.params(st.settings.server.max_tokens)
    _check_max_tokens(st, params.max_tokens, "max_tokens")
    return params


def _check_max_tokens(st: ServerState, max_tokens: int, field: str) -> None:
    window = st.context_window()
    if max_tokens > window:
        raise ApiError(400, f"{field}: {max_tokens} is more than this model's context window of {window} tokens",
                       code="invalid_request", param=field)


@router.post("/v1/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request) -> JSONResponse:
    st = state_of(request)
    spec = st.settings.retrieval.embedder
    known = {spec, *(MINILM_ALIASES if spec in MINILM_ALIASES else ())}
    if req.model not in known:
        raise ApiError(404, f"the embedding model {req.model!r} does not exist; this server has {spec!r}",
                       code="model_not_found", param="model")
    if req.dimensions is not None:
        raise ApiError(400, "dimensions is not supported: the embedder has a fixed size", param="dimensions")
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts or any(not t for t in texts):
        raise ApiError(400, "input must be a non-empty string or a list of non-empty strings", param="input")

    def run() -> tuple[np.ndarray, int]:
        embedder = st.embedder(spec)
        counter = embedder.token_counter()
        return embedder.embed(texts), sum(len(counter.token_starts(t)) for t in texts)

    slot = await st.limiter.acquire()  # embedding is model work too: it shares the generations' bound
    try:
        vectors, tokens = await run_in_threadpool(run)
    finally:
        slot.release()
    data = []
    for i, v in enumerate(vectors):
        value: Any = (base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()
                      if req.encoding_format == "base64" else [float(x) for x in v])
        data.append({"object": "embedding", "index": i, "embedding": value})
    return JSONResponse({"object": "list", "model": req.model, "data": data,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
