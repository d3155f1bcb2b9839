"""`OpenAIBackend`: any OpenAI-compatible HTTP server (`vllm serve`, llama.cpp's server, Ollama, Ember's own).

Completions go through `/v1/completions` (text or token-id prompts), chat through `/v1/chat/completions`,
so the server applies its own chat template. A batch is sent as concurrent requests from a bounded
thread pool; the server batches them. Streams read server-sent events; closing a stream's iterator
closes the HTTP response, and the server cancels the request when the connection drops.

Token ids come from the server where it returns them (vLLM's `return_token_ids`); otherwise from the
local `tokenizer` if one was given (re-encoding the text, which can differ from what was sampled at token
edges); otherwise they are empty. Timings are measured here, on the client: for a non-streamed request
the first token arrives with the last, so `first_token_s == total_s`; streams measure a real TTFT.
Every failure (unreachable, timeout, HTTP error, malformed body) is a `BackendError` naming the URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ember.model.backends import openai_wire as wire
from ember.model.backends.base import (
    BackendError,
    Capabilities,
    Completion,
    Delta,
    Message,
    Prompt,
    Timings,
    TokenLogprob,
)
from ember.model.backends.sse import iter_sse_data
from ember.model.outputs import ToolCallDelta
from ember.model.sampling_params import InvalidRequestError, SamplingParams
from ember.model.tokenizer import Tokenizer

if TYPE_CHECKING:
    import httpx

    from ember.model.tool_calls import ChatOptions

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
TOKENIZE = "/tokenize"


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 tokenizer: Tokenizer | str | Path | None = None, max_concurrency: int = 8) -> None:
        """`base_url`: the server's root, with or without `/v1`; `model`: the name it serves the model under;
        `timeout`: seconds to wait for each response (or for each chunk of a stream);
        `tokenizer`: the model's HF folder (or a loaded `Tokenizer`) to count tokens locally;
        `max_concurrency`: requests of one `generate` batch in flight at once."""
        import httpx

        if max_concurrency < 1:
            raise InvalidRequestError(f"max_concurrency={max_concurrency} must be >= 1")
        root = base_url.rstrip("/")
        self.base_url = root[: -len("/v1")] if root.endswith("/v1") else root
        self.model = model
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.tokenizer: Tokenizer | None = (
            tokenizer if tokenizer is None or isinstance(tokenizer, Tokenizer) else Tokenizer.load(tokenizer))
        # a remote model: its length is not known; tools and response_format go through to the server
        self.capabilities = Capabilities(tokenizer=self.tokenizer, tool_calls=True, structured_outputs=True)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers,
                                    timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                    limits=httpx.Limits(max_connections=max_concurrency))

    # ---- the Backend protocol ---------------------------------------------------------------------
    def generate(self, prompts: list[Prompt], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise InvalidRequestError(f"{len(prompts)} prompts but {len(per_prompt)} SamplingParams")
        if len(prompts) <= 1:
            return [self._complete(p, sp) for p, sp in zip(prompts, per_prompt, strict=True)]
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts)),
                                  thread_name_prefix="ember-openai")
        try:
            return list(pool.map(self._complete, prompts, per_prompt))
        finally:  # on the first failure, requests not yet sent are dropped
            pool.shutdown(wait=True, cancel_futures=True)

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Delta]:
        return self._stream(COMPLETIONS, {"prompt": prompt}, params, chat=False)

    def chat(self, messages: list[Message], params: SamplingParams, options: ChatOptions | None = None
             ) -> Completion:
        return self._request(CHAT, _chat_payload(messages, options), params, chat=True)

    def chat_stream(self, messages: list[Message], params: SamplingParams, options: ChatOptions | None = None
                    ) -> Iterator[Delta]:
        return self._stream(CHAT, _chat_payload(messages, options), params, chat=True)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (no BOS/EOS added): locally with `tokenizer`, else the server's `/tokenize`."""
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text, add_special_tokens=False))
        # vLLM reads `prompt`, llama.cpp's server reads `content`; each ignores the other.
        body = {"model": self.model, "prompt": text, "content": text, "add_special_tokens": False}
        url = self._url(TOKENIZE)
        with self._http_errors(url):
            response = self._client.post(TOKENIZE, json=body)
        if response.status_code in (404, 405):
            raise BackendError(f"the server at {self.base_url} has no {TOKENIZE} endpoint to count tokens with",
                               hint="Pass tokenizer=FOLDER (the model's HF folder) to count tokens locally.")
        data = self._json(response, url)
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise BackendError(f"{url} answered without a `tokens` list: {_preview(response.text)}",
                               hint="Pass tokenizer=FOLDER (the model's HF folder) to count tokens locally.")
        return len(tokens)

    def close(self) -> None:
        self._client.close()

    # ---- requests ---------------------------------------------------------------------------------
    def _complete(self, prompt: Prompt, params: SamplingParams) -> Completion:
        return self._request(COMPLETIONS, {"prompt": prompt}, params, chat=False)

    def _request(self, path: str, payload: dict[str, Any], params: SamplingParams, *, chat: bool) -> Completion:
        body = {"model": self.model, **payload, **wire.request_fields(params, chat=chat)}
        url = self._url(path)
        t0 = time.perf_counter()
        with self._http_errors(url):
            response = self._client.post(path, json=body)
        data = self._json(response, url)
        total = time.perf_counter() - t0
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BackendError(f"{url} answered without choices: {_preview(response.text)}",
                               hint="Is this an OpenAI-compatible server?")
        choice = choices[0]
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        text = text or ""
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            token_ids=self._token_ids(choice.get("token_ids"), text),
            finish_reason=wire.finish_reason(choice.get("finish_reason")) or "stop",
            prompt_tokens=_prompt_tokens(usage, data.get("prompt_token_ids") or choice.get("prompt_token_ids")),
            timings=Timings(first_token_s=total, total_s=total),
            logprobs=self._logprobs(choice.get("logprobs"), params, chat),
            cached_tokens=_cached_tokens(usage),
            tool_calls=wire.tool_calls((choice.get("message") or {}).get("tool_calls")) if chat else [],
        )

    def _stream(self, path: str, payload: dict[str, Any], params: SamplingParams, *, chat: bool) -> Iterator[Delta]:
        body = {"model": self.model, **payload, **wire.request_fields(params, chat=chat),
                "stream": True, "stream_options": {"include_usage": True}}
        url = self._url(path)
        texts: list[str] = []
        ids: list[int] = []
        logprobs: list[TokenLogprob] = []
        calls: list[ToolCallDelta] = []
        finish = None
        usage: dict[str, Any] = {}
        prompt_ids: Any = None
        t0 = time.perf_counter()
        first_token_s = 0.0
        with self._http_errors(url), self._client.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response, url)  # raises with the server's message
            for data in iter_sse_data(response.iter_lines()):
                if data.strip() == "[DONE]":
                    break
                chunk = _loads(data, url)
                usage = chunk.get("usage") or usage
                prompt_ids = chunk.get("prompt_token_ids") or prompt_ids
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    prompt_ids = choice.get("prompt_token_ids") or prompt_ids
                    text = ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""
                    new_ids = choice.get("token_ids") or []
                    new_lps = self._logprobs(choice.get("logprobs"), params, chat)
                    new_calls = wire.tool_call_deltas((choice.get("delta") or {}).get("tool_calls")) if chat else []
                    finish = wire.finish_reason(choice.get("finish_reason")) or finish
                    if text or new_ids or new_calls:
                        if not texts and not ids and not calls:
                            first_token_s = time.perf_counter() - t0
                        texts.append(text)
                        ids.extend(new_ids)
                        logprobs.extend(new_lps or [])
                        calls.extend(new_calls)
                        yield Delta(text=text, token_ids=list(new_ids), logprobs=new_lps, tool_calls=new_calls or None)
        total = time.perf_counter() - t0
        if finish is None:
            raise BackendError(f"the stream from {url} ended before the request finished",
                               hint=f"The server at {self.base_url} may have crashed or dropped the connection; "
                                    "check its log.")
        text = "".join(texts)
        completion = Completion(
            text=text,
            token_ids=ids or self._token_ids(None, text),
            finish_reason=finish,
            prompt_tokens=_prompt_tokens(usage, prompt_ids),
            timings=Timings(first_token_s=first_token_s or total, total_s=total),
            logprobs=logprobs if params.logprobs is not None else None,
            cached_tokens=_cached_tokens(usage),
            tool_calls=wire.assemble(calls),
        )
        yield Delta(text="", token_ids=[], finish_reason=finish, completion=completion)

    # ---- helpers ----------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def _token_ids(self, from_server: Any, text: str) -> list[int]:
        if isinstance(from_server, list):
            return [int(t) for t in from_server]
        return self.tokenizer.encode(text, add_special_tokens=False) if self.tokenizer and text else []

    def _logprobs(self, raw: Any, params: SamplingParams, chat: bool) -> list[TokenLogprob] | None:
        if params.logprobs is None:
            return None
        parse = wire.chat_logprobs if chat else wire.completion_logprobs
        return parse(raw, params.logprobs, self.tokenizer)

    @contextmanager
    def _http_errors(self, url: str) -> Iterator[None]:
        """Turn httpx's exceptions into `BackendError`s that say what to check."""
        import httpx

        try:
            yield
        except httpx.ConnectError as e:
            raise BackendError(f"cannot connect to {url} ({e})",
                               hint=f"Is the server running at {self.base_url}? Start it, or fix base_url.") from e
        except httpx.TimeoutException as e:
            raise BackendError(f"{url} did not answer within {self.timeout:g} s ({type(e).__name__})",
                               hint=f"Is the server at {self.base_url} overloaded or stuck? Check its log, "
                                    "or raise timeout=.") from e
        except httpx.HTTPError as e:
            raise BackendError(f"request to {url} failed: {type(e).__name__}: {e}",
                               hint=f"Check that {self.base_url} is an OpenAI-compatible server; read its log.") from e

    def _json(self, response: httpx.Response, url: str) -> dict[str, Any]:
        """The JSON body of a finished response; HTTP errors carry the server's own message."""
        if response.status_code >= 400:
            raise BackendError(f"{url} answered HTTP {response.status_code}: {_error_message(response.text)}",
                               hint=_status_hint(response.status_code, self.base_url, self.model))
        return _loads(response.text, url)


def _chat_payload(messages: list[Message], options: ChatOptions | None) -> dict[str, Any]:
    return {"messages": messages, **(options.to_openai() if options is not None else {})}


def _loads(text: str, url: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BackendError(f"{url} sent malformed JSON ({e}): {_preview(text)}",
                           hint="Is this an OpenAI-compatible server? Check base_url and the server's log.") from e
    if not isinstance(data, dict):
        raise BackendError(f"{url} sent JSON that is not an object: {_preview(text)}",
                           hint="Is this an OpenAI-compatible server? Check base_url.")
    if "error" in data and "choices" not in data:
        raise BackendError(f"{url} reported an error: {_error_message(text)}",
                           hint="Check the request's parameters and the server's log.")
    return data


def _error_message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return _preview(text)
    message = error.get("message") if isinstance(error, dict) else error
    return str(message) if message else _preview(text)


def _status_hint(status: int, base_url: str, model: str) -> str:
    if status in (401, 403):
        return f"The server at {base_url} refused the credentials: pass the right api_key."
    if status == 404:
        return f"Is {model!r} the name the server serves? GET {base_url}/v1/models lists them."
    if status < 500:
        return "The server rejected the request: check its parameters (prompt length, max_tokens, ...)."
    return f"The server at {base_url} failed: check its log."


def _preview(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _prompt_tokens(usage: dict[str, Any], prompt_ids: Any) -> int:
    if isinstance(usage.get("prompt_tokens"), int):
        return int(usage["prompt_tokens"])
    return len(prompt_ids) if isinstance(prompt_ids, list) else 0


def _cached_tokens(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    return int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
