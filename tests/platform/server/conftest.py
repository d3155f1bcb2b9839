"""A real Ember server on a free loopback port: the real SmolLM2 engine, the real MiniLM, real SQLite.

The engine and the embedder load once per session and are shared by the servers the tests start (each
with its own data directory and settings); uvicorn runs in a thread of the test process, so tests can
look at the engine's KV pool directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ember.model.backends.ember import EmberBackend
from ember.model.engine.llm_engine import EngineConfig
from ember.platform.server.app import create_app
from ember.platform.server.run import build_state
from ember.platform.server.state import ServerState
from ember.platform.settings import Settings
from ember.retrieval.embedders import SentenceTransformerEmbedder
from tests.net import free_port

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / "docs"


@pytest.fixture(scope="session")
def engine(smollm2_folder: Path) -> Iterator[EmberBackend]:
    b = EmberBackend.from_path(smollm2_folder, dtype="float32", device="cpu",
                               config=EngineConfig(kv_cache_bytes=256 << 20, max_model_len=2048, max_num_seqs=32))
    yield b
    b.close()


@pytest.fixture(scope="session")
def embedder(minilm: SentenceTransformerEmbedder) -> SentenceTransformerEmbedder:
    return minilm


class LiveServer:
    def __init__(self, st: ServerState) -> None:
        self.state = st
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(st), host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.state.close()


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def make_server(tmp_path: Path, engine: EmberBackend, embedder: SentenceTransformerEmbedder
                ) -> Iterator[ServerFactory]:
    started: list[LiveServer] = []

    def make(data_dir: Path | None = None, **server: Any) -> LiveServer:
        settings = Settings(data_dir=data_dir or tmp_path / "data", server={"max_tokens": 16, **server})
        st = build_state(settings, engine, "smollm2", lambda spec: embedder)
        s = LiveServer(st)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def wait_job(client: httpx.Client, collection: str, job: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    deadline = time.time() + timeout
    while job["status"] in ("queued", "running"):
        assert time.time() < deadline, f"ingest job did not finish: {job}"
        time.sleep(0.1)
        job = client.get(f"/v1/collections/{collection}/jobs/{job['id']}").raise_for_status().json()
    return job


def upload_docs(client: httpx.Client, collection: str = "docs", paths: list[Path] | None = None) -> dict[str, Any]:
    files = [("file", (p.name, p.read_bytes(), "text/markdown")) for p in (paths or sorted(DOCS.glob("*.md")))]
    r = client.post(f"/v1/collections/{collection}/files", files=files)
    assert r.status_code == 202, r.text
    job = wait_job(client, collection, r.json())
    assert job["status"] == "done", job
    return job
