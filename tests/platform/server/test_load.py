"""Load and cancellation: 50 concurrent streaming chats all finish or get 429 (none hangs) and the KV pool
is empty afterwards; a client that disconnects mid-stream frees its KV blocks; a full queue answers 429."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from ember.model.backends.ember import EmberBackend

from .conftest import ServerFactory

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]
CHAT = {"model": "smollm2", "stream": True, "temperature": 0,
        "messages": [{"role": "user", "content": "Write a short poem about the sea."}]}


def idle(engine: EmberBackend, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not engine.engine.has_unfinished() and engine.engine.blocks.num_used == 0:
            return True
        time.sleep(0.02)
    return False


async def one_chat(client: httpx.AsyncClient, i: int) -> tuple[int, str, bool]:
    async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 6, "seed": i}) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, r.headers.get("retry-after", ""), False
        done = False
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                assert "error" not in json.loads(line[6:])
        return 200, "", done


def test_fifty_concurrent_streams_finish_or_get_429(make_server: ServerFactory, engine: EmberBackend) -> None:
    server = make_server(max_concurrent=8, max_queued=8)

    async def run() -> list[tuple[int, str, bool]]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
            return await asyncio.wait_for(asyncio.gather(*(one_chat(client, i) for i in range(50))), timeout=240)

    results = asyncio.run(run())
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 429}, statuses
    assert all(done for s, _, done in results if s == 200)  # every accepted stream ran to [DONE]
    assert all(ra == "2" for s, ra, _ in results if s == 429)
    print(f"50 streams: {statuses.count(200)} served, {statuses.count(429)} got 429")
    assert statuses.count(200) >= 8
    assert idle(engine)  # nothing left running, every KV block back in the pool
    with server.client() as c:
        metrics = c.get("/metrics").text
    assert f'ember_requests_total{{route="/v1/chat/completions",method="POST",status="200"}} {statuses.count(200)}' \
        in metrics


def test_disconnect_frees_blocks_and_full_queue_gets_429(make_server: ServerFactory, engine: EmberBackend) -> None:
    server = make_server(max_concurrent=1, max_queued=0)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 400, "ignore_eos": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(8)]  # a few tokens in
            assert any('"content"' in g for g in got)
            assert engine.engine.blocks.num_used > 0
            busy = httpx.post(server.url + "/v1/chat/completions", json={**CHAT, "stream": False, "max_tokens": 2})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
            assert busy.json()["error"]["type"] == "rate_limit_error"
        # the client closed the stream mid-answer: the generation stops and its blocks go back
        assert idle(engine, timeout=10)
        assert 'ember_generations_cancelled_total 1' in c.get("/metrics").text
        ok = c.post("/v1/chat/completions", json={**CHAT, "stream": False, "max_tokens": 2})
        assert ok.status_code == 200  # the slot was released
