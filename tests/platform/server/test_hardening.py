"""Issue 18, hardening: each defect found by trying the server as an attacker would, through the real HTTP
server on 127.0.0.1 (the real SmolLM2 engine, the real MiniLM, real SQLite). Where the defect was about other
clients, other clients run at the same time."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from ember.model.backends.base import BackendError
from ember.model.backends.ember import EmberBackend
from ember.model.sampling_params import SamplingParams
from ember.platform.server.app import MAX_BODY
from ember.platform.server.uploads import receive_files

from .conftest import ServerFactory, upload_docs, wait_job
from .test_load import idle

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]
USER = [{"role": "user", "content": "Write a short poem about the sea."}]


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[int, str, list[dict[str, Any]]]:
    """(status, text, error payloads) of one streamed chat."""
    async with client.stream("POST", "/v1/chat/completions", json={"model": "smollm2", "stream": True,
                                                                   "messages": USER, **body}) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, r.text, []
        text, errors, done = "", [], False
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    errors.append(chunk["error"])
                else:
                    text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
        assert done or errors
        return 200, text, errors


def test_near_zero_temperature_does_not_break_other_streams(make_server: ServerFactory,
                                                            engine: EmberBackend) -> None:
    """A temperature of 1e-38 made the shared step raise 'probability tensor contains inf/nan', and every other
    stream in the batch ended with that error."""
    server = make_server(max_concurrent=8)
    hostile = [{"temperature": 1e-38, "max_tokens": 12, "seed": 1},
               {"temperature": 1e-38, "top_p": 1e-9, "max_tokens": 12, "seed": 2},
               {"temperature": 5e-324, "min_p": 1.0, "max_tokens": 12}]
    normal = [{"temperature": 0.8, "seed": i, "max_tokens": 24, "ignore_eos": True} for i in range(4)]

    async def run() -> list[tuple[int, str, list[dict[str, Any]]]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
            return await asyncio.gather(*(stream_chat(c, b) for b in [*normal, *hostile]))

    results = asyncio.run(run())
    for body, (status, text, errors) in zip([*normal, *hostile], results, strict=True):
        assert status == 200 and errors == [], (body, status, errors)
        assert text.strip(), body
    assert idle(engine)
    with server.client() as c:  # a tiny penalty is refused at the boundary, naming the field
        r = c.post("/v1/chat/completions", json={"model": "smollm2", "messages": USER, "repetition_penalty": 1e-300})
        assert r.status_code == 400 and r.json()["error"]["param"] == "repetition_penalty", r.text


def test_a_request_that_fails_in_the_engine_fails_alone(make_server: ServerFactory, engine: EmberBackend) -> None:
    """Per-request failures in the engine fail that request only: a logits processor that raises (as a broken
    grammar would) ends its own request with an error while streams from HTTP clients go on; a repetition
    penalty of 1e-300 (allowed by SamplingParams, below the HTTP bound) samples finite tokens."""
    server = make_server(max_concurrent=8)

    def broken(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        if len(output_ids) >= 3:
            raise RuntimeError("grammar state corrupted")
        return logits

    async def clients() -> list[tuple[int, str, list[dict[str, Any]]]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
            return await asyncio.gather(*(stream_chat(c, {"temperature": 0, "max_tokens": 32, "ignore_eos": True})
                                          for _ in range(3)))

    failures: list[BaseException] = []
    tiny_penalty: list[str] = []

    def bad_request() -> None:
        time.sleep(0.3)  # join the HTTP clients' running batch
        try:
            engine.generate(["Count to ten:"], SamplingParams(max_tokens=40, ignore_eos=True, temperature=0.7,
                                                             logits_processors=[broken]))
        except BaseException as e:
            failures.append(e)
        c = engine.generate(["Count to ten:"], SamplingParams(max_tokens=8, temperature=0.7, seed=3,
                                                              repetition_penalty=1e-300))[0]
        tiny_penalty.append(c.text)

    side = threading.Thread(target=bad_request)
    side.start()
    results = asyncio.run(clients())
    side.join(timeout=120)
    assert len(failures) == 1 and isinstance(failures[0], BackendError), failures
    assert "grammar state corrupted" in str(failures[0])
    assert all(status == 200 and not errors for status, _, errors in results), results
    texts = {text for _, text, _ in results}
    assert len(texts) == 1, results  # all three finished; greedy: the same answer
    with server.client() as c:  # and it is the answer the engine gives alone
        solo = c.post("/v1/chat/completions", json={"model": "smollm2", "messages": USER, "temperature": 0,
                                                    "max_tokens": 32, "ignore_eos": True}).json()
    assert solo["choices"][0]["message"]["content"] == texts.pop()
    assert len(tiny_penalty) == 1 and tiny_penalty[0]
    assert idle(engine)


def test_multipart_upload_of_many_files_stores_each_files_bytes(make_server: ServerFactory, tmp_path: Path) -> None:
    """Six or more files in one upload answered 500 and left files holding other files' bytes (temporary names
    came from `id()` of freed part objects)."""
    data = tmp_path / "data"
    server = make_server(data_dir=data)
    files = {f"note-{i:02d}.md": f"# Note {i}\n\nThe secret word of note {i} is zebra{i}quartz.\n".encode() * (i + 1)
             for i in range(12)}
    with server.client() as c:
        r = c.post("/v1/collections/many/files", files=[("file", (n, b, "text/markdown")) for n, b in files.items()])
        assert r.status_code == 202, r.text
        job = wait_job(c, "many", r.json())
        assert job["status"] == "done" and sorted(job["added"]) == sorted(files), job
        stored = {p.name: p.read_bytes() for p in (data / "uploads" / "many").iterdir()}
        assert stored == files  # every file holds exactly its own bytes, nothing else is left
        for i in (0, 5, 6, 11):
            hits = c.post("/v1/collections/many/search",
                          json={"query": f"zebra{i}quartz", "mode": "bm25", "k": 1}).json()["data"]
            assert hits[0]["source"].endswith(f"note-{i:02d}.md"), hits


@pytest.mark.parametrize("n", [6, 12, 20])
@pytest.mark.parametrize("chunk", [1 << 16, 1024])
def test_multipart_parser_stores_each_parts_bytes(tmp_path: Path, n: int, chunk: int) -> None:
    """The same defect where it lived, without a server in between (whose allocations hid the reuse of a freed
    part's `id()` in some runs): a real multipart body, fed in chunks, into a real folder."""
    files = {f"f{i}.md": f"# file {i}\n".encode() * (i + 1) for i in range(n)}
    request = httpx.Request("POST", "http://127.0.0.1/", files=[("file", (k, v, "text/markdown"))
                                                                  for k, v in files.items()])
    body = request.read()

    async def stream() -> Any:
        for i in range(0, len(body), chunk):
            yield body[i:i + chunk]

    stored = asyncio.run(receive_files(stream(), request.headers["content-type"], tmp_path, 1 << 20))
    assert {p.name: p.read_bytes() for p in stored} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # no temporary file left


def test_collection_search_endpoint_answers(make_server: ServerFactory) -> None:
    """`POST /v1/collections/NAME/search` answered 500 whenever it found anything."""
    server = make_server()
    with server.client() as c:
        upload_docs(c, "docs")
        for mode in ("dense", "bm25", "hybrid"):
            r = c.post("/v1/collections/docs/search", json={"query": "How do I revoke an API key?", "mode": mode,
                                                            "k": 3})
            assert r.status_code == 200, (mode, r.text)
            hits = r.json()["data"]
            assert [h["rank"] for h in hits] == [1, 2, 3]
            assert all(h["text"] and h["source"].endswith(".md") and h["end"] > h["start"] for h in hits)
            assert any("ember keys revoke" in h["text"] for h in hits), (mode, hits)
        assert c.post("/v1/collections/nope/search", json={"query": "x"}).status_code == 404


def test_concurrent_first_uploads_and_refused_uploads(make_server: ServerFactory, tmp_path: Path) -> None:
    """Concurrent first uploads to a new collection raced (409s, files lost); a refused upload still created
    the collection."""
    server = make_server(data_dir=tmp_path / "data", max_upload_mb=0.01)

    def upload(i: int) -> tuple[int, dict[str, Any]]:
        with server.client() as c:
            r = c.post("/v1/collections/fresh/files",
                       files={"file": (f"doc-{i}.md", f"# Doc {i}\n\nword{i}unique\n".encode())})
            return r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(upload, range(8)))
    assert [s for s, _ in results] == [202] * 8, results
    with server.client() as c:
        for _, job in results:
            assert wait_job(c, "fresh", job)["status"] == "done"
        info = c.get("/v1/collections/fresh").json()
        assert sorted(f["source"] for f in info["files"]) == [f"doc-{i}.md" for i in range(8)]
        for name, body, status in [("tool.exe", b"MZ", 415), ("big.md", b"x" * 20_000, 413), ("../x.md", b"#", 400)]:
            r = c.post("/v1/collections/never/files", files={"file": (name, body)})
            assert r.status_code == status, (name, r.text)
        assert c.get("/v1/collections/never").status_code == 404
        assert "never" not in {x["name"] for x in c.get("/v1/collections").json()["data"]}


def test_invalid_unicode_and_bounds_are_400s_naming_the_field(make_server: ServerFactory) -> None:
    """A lone surrogate in message content was a 500; max_tokens had no upper bound."""
    server = make_server()
    surrogate = '"\\ud800 hello"'  # JSON allows the escape; it is no valid Unicode text
    raw = [("/v1/chat/completions", '{"model": "smollm2", "messages": [{"role": "user", "content": %s}]}',
            "messages.0.content"),
           ("/v1/chat/completions", '{"model": "smollm2", "messages": [{"role": "user", "content": '
            '[{"type": "text", "text": %s}]}]}', "messages.0.content"),
           ("/v1/completions", '{"model": "smollm2", "prompt": %s}', "prompt"),
           ("/v1/chat/completions", '{"model": "smollm2", "stop": %s, "messages": [{"role": "user", "content": "a"}]}',
            "stop"),
           ("/v1/embeddings", '{"model": "all-MiniLM-L6-v2", "input": %s}', "input"),
           ("/v1/sessions", '{"title": %s}', "title")]
    with server.client() as c:
        for path, template, field in raw:
            r = c.post(path, content=(template % surrogate).encode(), headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (path, r.status_code, r.text)
            err = r.json()["error"]
            assert err["param"].startswith(field) and "surrogate" in err["message"], (path, err)
        chat = {"model": "smollm2", "messages": USER}
        bad: list[tuple[dict[str, Any], str]] = [
                             ({"max_tokens": 10**9}, "max_tokens"), ({"max_tokens": 4096}, "max_tokens"),
                             ({"max_completion_tokens": 100_000}, "max_completion_tokens"),
                             ({"temperature": 2.5}, "temperature"), ({"top_p": 0}, "top_p"),
                             ({"top_k": -1}, "top_k"), ({"min_p": 1.5}, "min_p"),
                             ({"repetition_penalty": 0}, "repetition_penalty"),
                             ({"presence_penalty": 3}, "presence_penalty"),
                             ({"frequency_penalty": -3}, "frequency_penalty"), ({"seed": 2**70}, "seed"),
                             ({"stop": ["x"] * 17}, "stop"), ({"stop": ""}, "stop"), ({"n": 2}, "n")]
        for extra, field in bad:
            r = c.post("/v1/chat/completions", json={**chat, **extra})
            assert r.status_code == 400, (extra, r.text)
            assert r.json()["error"]["param"].startswith(field), (extra, r.json())
        r = c.post("/v1/completions", json={"model": "smollm2", "prompt": "a", "max_tokens": 4096})
        assert r.status_code == 400 and "context window of 2048" in r.json()["error"]["message"]
        ok = c.post("/v1/chat/completions", json={**chat, "max_tokens": 2, "seed": 2**63 - 1, "temperature": 2})
        assert ok.status_code == 200, ok.text


def test_non_streamed_completion_is_cancelled_when_the_client_leaves(make_server: ServerFactory,
                                                                      engine: EmberBackend) -> None:
    server = make_server()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", timeout=1.5,
                   json={"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 1500, "ignore_eos": True})
    assert idle(engine, timeout=10)  # it did not run on to 1500 tokens
    with server.client() as c:
        assert "ember_generations_cancelled_total 1" in c.get("/metrics").text
        r = c.post("/v1/completions", json={"model": "smollm2", "prompt": "The capital of France is",
                                            "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["text"], r.text


def test_embeddings_go_through_the_concurrency_limiter(make_server: ServerFactory, engine: EmberBackend) -> None:
    server = make_server(max_concurrent=1, max_queued=0)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json={"model": "smollm2", "stream": True, "messages": USER,
                                                            "max_tokens": 400, "ignore_eos": True}) as r:
            lines = r.iter_lines()
            assert any('"content"' in next(lines) for _ in range(4))
            busy = httpx.post(server.url + "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "hello"})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "2", busy.text
        assert idle(engine)
        ok = c.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["hello", "world"]})
        assert ok.status_code == 200 and len(ok.json()["data"]) == 2


def test_host_header_and_cross_origin_requests(make_server: ServerFactory, tmp_path: Path) -> None:
    """Without keys the server answered any Host (DNS rebinding) and took cross-origin form uploads (CSRF)."""
    server = make_server(data_dir=tmp_path / "data", allowed_hosts=["ember.lan"],
                         allowed_origins=["http://tools.lan:3000"])
    own = server.url
    md = {"file": ("a.md", b"# A\n\nplanted text\n", "text/markdown")}
    with server.client() as c:
        for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example", "localhost.evil",
                     "10.0.0.5", "0.0.0.0"):
            for method, path in [("GET", "/v1/models"), ("GET", "/"), ("GET", "/health"),
                                 ("POST", "/v1/collections")]:
                r = c.request(method, path, headers={"Host": host}, json={"name": "x"})
                assert r.status_code == 421, (host, path, r.status_code)
                assert r.json()["error"]["code"] == "misdirected_request"
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}",
                     f"app.localhost:{server.port}", "127.8.9.10", "ember.lan", f"EMBER.LAN:{server.port}"):
            assert c.get("/v1/models", headers={"Host": host}).status_code == 200, host
        # cross-origin state changes are refused and change nothing
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Origin": f"http://localhost:{server.port + 1}"},
                        {"Origin": own, "Sec-Fetch-Site": "cross-site"}):
            r = c.post("/v1/collections/planted/files", files=md, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin_refused", (headers, r.text)
            assert c.delete("/v1/sessions/x", headers=headers).status_code == 403
        assert c.get("/v1/collections/planted").status_code == 404
        assert c.get("/v1/models", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS
        # the page's own origin, a configured origin and non-browser clients (no Origin) are served
        for headers in ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {"Origin": "http://tools.lan:3000"}, {}):
            r = c.post("/v1/collections/planted/files", files=md, headers=headers)
            assert r.status_code == 202, (headers, r.text)
            wait_job(c, "planted", r.json())


def test_keep_alive_survives_a_500(make_server: ServerFactory) -> None:
    """After a 500 uvicorn closed the keep-alive connection (Starlette re-raised the error after answering)."""
    server = make_server()

    def broken(spec: str | None = None) -> Any:
        raise RuntimeError("embedder exploded")

    setattr(server.state, "embedder", broken)  # noqa: B010 (an instance attribute shadows the method)
    body = json.dumps({"model": "all-MiniLM-L6-v2", "input": "x"}).encode()
    request = (b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        f = s.makefile("rb")
        statuses = []
        for req in (request, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
            s.sendall(req)
            status = f.readline()
            assert status, "the server closed the connection"
            headers = {}
            while (line := f.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            payload = json.loads(f.read(int(headers["content-length"])))
            statuses.append((int(status.split()[1]), payload))
    assert statuses[0][0] == 500 and statuses[0][1]["error"]["message"] == "internal server error (RuntimeError)"
    assert "exploded" not in json.dumps(statuses[0][1])  # no internals leak
    assert statuses[1][0] == 200 and statuses[1][1]["status"] == "ok"


def test_revoked_key_is_not_named_and_ui_sends_security_headers(make_server: ServerFactory) -> None:
    server = make_server()
    with server.client() as c:
        page = c.get("/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        for path in ("/static/app.js", "/v1/models", "/health"):
            assert c.get(path).headers["x-content-type-options"] == "nosniff", path
    key = server.state.keys.create("alice-laptop")
    server.state.keys.revoke("alice-laptop")
    with server.client(key) as c:
        r = c.get("/v1/models")
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        assert "alice" not in r.text


def test_oversized_json_bodies_are_413s_before_they_are_read(make_server: ServerFactory) -> None:
    """A JSON body past MAX_BODY is refused by its Content-Length, or as it streams in when chunked; uploads
    keep their own per-file limit."""
    server = make_server()
    big = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": "x" * (MAX_BODY + 10)}]})

    def chunks() -> Any:
        for i in range(0, len(big), 1 << 16):
            yield big[i:i + (1 << 16)].encode()

    with server.client() as c:
        sized = c.post("/v1/chat/completions", content=big.encode(), headers={"Content-Type": "application/json"})
        assert sized.status_code == 413 and sized.json()["error"]["code"] == "request_too_large", sized.text
        chunked = c.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413 and "larger than 8 MiB" in chunked.json()["error"]["message"]
        assert c.get("/health").status_code == 200
        page = b"<html><body><main><p>A big page.</p></main><script>" + b"var x = 1;\n" * 900_000 + b"</script>"
        upload = c.post("/v1/collections/big/files", files={"file": ("big.html", page)})  # ~10 MB of it a script
        assert upload.status_code == 202, upload.text  # over MAX_BODY, under the 20 MB upload limit
        job = wait_job(c, "big", upload.json())
        assert job["status"] == "done" and job["added"] == ["big.html"], job
