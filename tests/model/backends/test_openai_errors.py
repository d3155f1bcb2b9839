"""`OpenAIBackend` failures without a real model: nothing listening, and a loopback stub that misbehaves.

Every failure must be a `BackendError` that names the URL, never a raw httpx exception.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ember.model.backends.base import Backend, BackendError
from ember.model.backends.openai import OpenAIBackend
from ember.model.sampling_params import SamplingParams

PARAMS = SamplingParams(max_tokens=4)
CHUNK = {"choices": [{"index": 0, "text": "hi", "finish_reason": None}]}


class Stub(BaseHTTPRequestHandler):
    """Misbehaves the way the request's `model` field names (HTTP/1.0: each body ends when the socket closes)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        kind = body.get("model")
        if self.path == "/tokenize" or kind == "http500":
            status = 404 if self.path == "/tokenize" else 500
            self.reply(status, "application/json", json.dumps({"error": {"message": "engine exploded"}}))
        elif kind == "notjson":
            self.reply(200, "text/html", "<html>hello</html>")
        elif kind == "nochoices":
            self.reply(200, "application/json", json.dumps({"object": "text_completion"}))
        elif kind == "badsse":
            self.reply(200, "text/event-stream", f"data: {json.dumps(CHUNK)}\n\ndata: {{oops\n\n")
        elif kind == "cutsse":  # the server dies mid-stream: no finish_reason, no [DONE]
            self.reply(200, "text/event-stream", f"data: {json.dumps(CHUNK)}\n\n")
        elif kind == "slow":
            time.sleep(3)
            self.reply(200, "application/json", json.dumps({"choices": [{"text": "late", "finish_reason": "stop"}]}))

    def reply(self, status: int, content_type: str, text: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def backend(base: str, model: str, timeout: float = 10) -> OpenAIBackend:
    return OpenAIBackend(base, model, timeout=timeout)


def test_connection_refused_names_the_url(free_port: int) -> None:
    base = f"http://127.0.0.1:{free_port}"
    b = backend(base + "/v1", "m")
    assert isinstance(b, Backend)
    calls = [lambda: b.generate(["x", "y"], PARAMS), lambda: list(b.stream("x", PARAMS)),
             lambda: b.chat([{"role": "user", "content": "x"}], PARAMS), lambda: b.count_tokens("x")]
    for call in calls:
        with pytest.raises(BackendError) as e:
            call()
        assert base in e.value.message
        assert e.value.hint and f"Is the server running at {base}?" in e.value.hint


def test_http_500_carries_the_servers_message(stub: str) -> None:
    b = backend(stub, "http500")
    for call in (lambda: b.generate(["x"], PARAMS), lambda: list(b.stream("x", PARAMS)),
                 lambda: list(b.chat_stream([{"role": "user", "content": "x"}], PARAMS))):
        with pytest.raises(BackendError) as e:
            call()
        assert "HTTP 500" in e.value.message and "engine exploded" in e.value.message and stub in e.value.message


def test_malformed_json_and_missing_choices(stub: str) -> None:
    with pytest.raises(BackendError, match="malformed JSON"):
        backend(stub, "notjson").generate(["x"], PARAMS)
    with pytest.raises(BackendError, match="without choices"):
        backend(stub, "nochoices").chat([{"role": "user", "content": "x"}], PARAMS)


def test_malformed_sse_after_a_good_chunk(stub: str) -> None:
    it = backend(stub, "badsse").stream("x", PARAMS)
    assert next(it).text == "hi"
    with pytest.raises(BackendError, match="malformed JSON") as e:
        next(it)
    assert f"{stub}/v1/completions" in e.value.message


def test_stream_cut_before_the_finish(stub: str) -> None:
    with pytest.raises(BackendError, match="ended before the request finished"):
        list(backend(stub, "cutsse").stream("x", PARAMS))


def test_timeout(stub: str) -> None:
    with pytest.raises(BackendError, match=r"did not answer within 0\.5 s"):
        backend(stub, "slow", timeout=0.5).generate(["x"], PARAMS)


def test_count_tokens_without_a_tokenize_endpoint(stub: str) -> None:
    with pytest.raises(BackendError, match="no /tokenize endpoint") as e:
        backend(stub, "any").count_tokens("x")
    assert e.value.hint and "tokenizer=" in e.value.hint
