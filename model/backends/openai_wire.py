"""The OpenAI HTTP wire format, both ways: request fields from `SamplingParams`, Ember types from responses.

Standard fields (max_tokens, temperature, top_p, penalties, stop, seed, logprobs) go as the OpenAI API
names them. The rest of `SamplingParams` goes as vLLM's extension fields (top_k, min_p,
repetition_penalty, ignore_eos, stop_token_ids), and only when set: a request with default values for
them stays a plain OpenAI request that llama.cpp's server or Ollama accept as well. `return_token_ids`
and, with logprobs, `return_tokens_as_token_ids` ask vLLM for token ids; servers that do not know them
ignore them, and the parsers below then fall back to what the response has (llama.cpp's `id` fields).
"""

from __future__ import annotations

import json
from typing import Any

from ember.model.backends.base import FinishReason, TokenLogprob
from ember.model.outputs import ToolCall, ToolCallDelta
from ember.model.sampling_params import InvalidRequestError, SamplingParams
from ember.model.tokenizer import Tokenizer

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop", "eos": "stop", "tool_calls": "tool_calls", "function_call": "tool_calls", "content_filter": "stop",
    "length": "length",
    "abort": "cancelled", "cancelled": "cancelled",
}
TOKEN_ID_PREFIX = "token_id:"  # vLLM's `return_tokens_as_token_ids` spelling of a token


def request_fields(params: SamplingParams, *, chat: bool) -> dict[str, Any]:
    """The body fields for one request, besides `model` and `prompt`/`messages`."""
    p = params
    if p.logits_processors:
        raise InvalidRequestError("logits processors (constrained decoding) run only on the ember backend")
    body: dict[str, Any] = {"max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
                            "return_token_ids": True}
    if p.presence_penalty:
        body["presence_penalty"] = p.presence_penalty
    if p.frequency_penalty:
        body["frequency_penalty"] = p.frequency_penalty
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    # vLLM's extensions, sent only when they change something.
    if p.top_k > 0:
        body["top_k"] = p.top_k
    if p.min_p > 0:
        body["min_p"] = p.min_p
    if p.repetition_penalty != 1:
        body["repetition_penalty"] = p.repetition_penalty
    if p.ignore_eos:
        body["ignore_eos"] = True
    if p.stop_token_ids:
        body["stop_token_ids"] = list(p.stop_token_ids)
    if p.logprobs is not None:
        if chat:
            body["logprobs"] = True
            body["top_logprobs"] = p.logprobs
        else:
            body["logprobs"] = p.logprobs
        body["return_tokens_as_token_ids"] = True
    return body


def finish_reason(raw: Any) -> FinishReason | None:
    """None while a stream goes on; a reason a server invented counts as a normal stop."""
    if raw is None:
        return None
    return FINISH_REASONS.get(str(raw), "stop")


def token_id(token: Any, explicit: Any = None) -> int:
    """The id of a logprob entry: llama.cpp's `id`, vLLM's `token_id:N` spelling, else -1 (unknown)."""
    if isinstance(explicit, int):
        return explicit
    if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
        try:
            return int(token[len(TOKEN_ID_PREFIX):])
        except ValueError:
            return -1
    return -1


def token_text(tid: int, token: Any, raw_bytes: Any, tokenizer: Tokenizer | None) -> str:
    """The text of one token: decoded locally when we can, else what the server sent in a usable form."""
    if tokenizer is not None and tid >= 0:
        return tokenizer.decode([tid], skip_special_tokens=False)
    if isinstance(token, str) and not token.startswith(TOKEN_ID_PREFIX):
        return token
    if isinstance(raw_bytes, list) and all(isinstance(b, int) for b in raw_bytes):
        text = bytes(raw_bytes).decode("utf-8", errors="replace")
        return "" if text.startswith(TOKEN_ID_PREFIX) else text
    return ""


def _top(alternatives: list[tuple[int, float]], n: int) -> dict[int, float]:
    best = sorted((a for a in alternatives if a[0] >= 0), key=lambda a: -a[1])[:n]
    return dict(best)


def completion_logprobs(raw: Any, n: int, tokenizer: Tokenizer | None) -> list[TokenLogprob] | None:
    """`/v1/completions` logprobs: parallel lists `tokens`, `token_logprobs`, `top_logprobs`."""
    if not isinstance(raw, dict) or not raw.get("tokens"):
        return None
    tokens = raw["tokens"]
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    out = []
    for tok, value, top in zip(tokens, values, tops, strict=False):
        tid = token_id(tok)
        alternatives = [(token_id(k), float(v)) for k, v in (top or {}).items()]
        out.append(TokenLogprob(tid, token_text(tid, tok, None, tokenizer), float(value), _top(alternatives, n)))
    return out


def chat_logprobs(raw: Any, n: int, tokenizer: Tokenizer | None) -> list[TokenLogprob] | None:
    """`/v1/chat/completions` logprobs: `content` is a list of {token, logprob, bytes, top_logprobs}."""
    if not isinstance(raw, dict) or not raw.get("content"):
        return None
    out = []
    for entry in raw["content"]:
        tid = token_id(entry.get("token"), entry.get("id"))
        alternatives = [(token_id(a.get("token"), a.get("id")), float(a["logprob"]))
                        for a in entry.get("top_logprobs") or []]
        text = token_text(tid, entry.get("token"), entry.get("bytes"), tokenizer)
        out.append(TokenLogprob(tid, text, float(entry["logprob"]), _top(alternatives, n)))
    return out


def tool_calls(raw: Any) -> list[ToolCall]:
    """A reply message's `tool_calls` (function calls only; arguments kept as the JSON text sent)."""
    out = []
    for c in raw if isinstance(raw, list) else []:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            args = fn.get("arguments")
            text = args if isinstance(args, str) else json.dumps(args)
            out.append(ToolCall(str(c.get("id") or ""), fn["name"], text))
    return out


def tool_call_deltas(raw: Any) -> list[ToolCallDelta]:
    """A streamed delta's `tool_calls` pieces."""
    out = []
    for c in raw if isinstance(raw, list) else []:
        if not isinstance(c, dict):
            continue
        fn = c.get("function") or {}
        out.append(ToolCallDelta(int(c.get("index") or 0), c.get("id"), fn.get("name"), fn.get("arguments") or ""))
    return out


def assemble(deltas: list[ToolCallDelta]) -> list[ToolCall]:
    """The calls a stream of pieces adds up to, by index."""
    calls: dict[int, list[str]] = {}
    for d in deltas:
        entry = calls.setdefault(d.index, ["", "", ""])
        entry[0], entry[1] = d.id or entry[0], d.name or entry[1]
        entry[2] += d.arguments
    return [ToolCall(i, n, a) for _, (i, n, a) in sorted(calls.items())]
