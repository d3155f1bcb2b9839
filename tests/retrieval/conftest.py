"""Retrieval fixtures: the real MiniLM (loaded once), a counting wrapper, a loopback /v1/embeddings server,
and small corpora read from ../shared/datasets (never copied into the repo)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest

from ember.retrieval import store
from ember.retrieval.collection import Collection
from ember.retrieval.embedders import (
    EmbedderInfo,
    SentenceTransformerEmbedder,
)
from ember.retrieval.tokens import TokenCounter

if TYPE_CHECKING:
    from ember.model.backends.ember import EmberBackend

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO.parent / "shared" / "datasets"
FASTAPI = DATASETS / "documents" / "fastapi-docs" / "docs" / "en" / "docs"
PDFS = DATASETS / "documents" / "pdf"
SMALL_DOCS = ["tutorial/query-params.md", "tutorial/path-params.md", "tutorial/background-tasks.md",
              "tutorial/cors.md", "tutorial/static-files.md", "tutorial/first-steps.md"]


class CountingEmbedder:
    """Delegates to a real embedder and counts `embed` calls and texts (to prove a query is embedded once)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.calls: list[int] = []

    @property
    def info(self) -> EmbedderInfo:
        return self.inner.info

    @property
    def max_tokens(self) -> int | None:
        return self.inner.max_tokens

    def token_counter(self) -> TokenCounter:
        return self.inner.token_counter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.embed(texts)


@pytest.fixture
def counting(minilm: SentenceTransformerEmbedder) -> CountingEmbedder:
    return CountingEmbedder(minilm)


class EmbeddingsServer:
    """A loopback OpenAI-compatible `/v1/embeddings` server backed by the real MiniLM."""

    def __init__(self, embedder: SentenceTransformerEmbedder, api_key: str | None = None) -> None:
        self.requests: list[dict] = []
        self.fail_next: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status, payload = 200, cast(dict[str, Any], {})
                if server.fail_next is not None:
                    status, payload = server.fail_next, {"error": {"message": "overloaded"}}
                    server.fail_next = None
                elif self.path != "/v1/embeddings":
                    status, payload = 404, {"error": {"message": "not found"}}
                elif api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                    status, payload = 401, {"error": {"message": "bad key"}}
                else:
                    vectors = embedder.embed(body["input"])
                    data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
                    payload = {"object": "list", "model": body["model"], "data": data[::-1]}  # order by index
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def backend(smollm2_folder: Path) -> Iterator[EmberBackend]:
    """SmolLM2 on our engine, fp32 on the CPU, for the RAG and interop tests."""
    from ember.model.backends.ember import EmberBackend
    from ember.model.engine.llm_engine import EngineConfig

    b = EmberBackend.from_path(smollm2_folder, dtype="float32", device="cpu",
                               config=EngineConfig(kv_cache_bytes=192 << 20, max_model_len=2048))
    yield b
    b.close()


@pytest.fixture(scope="session")
def embeddings_server(minilm: SentenceTransformerEmbedder) -> Iterator[EmbeddingsServer]:
    server = EmbeddingsServer(minilm)
    yield server
    server.close()


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """Six short FastAPI tutorial pages, copied to a temp folder so tests can edit and delete them."""
    folder = tmp_path / "corpus"
    for rel in SMALL_DOCS:
        dest = folder / Path(rel).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FASTAPI / rel, dest)
    return folder


def consistent(col: Collection) -> None:
    """SQLite, FAISS and BM25 agree on the live chunk ids, and every document's chunks are complete."""
    col.load_indexes(force=True)
    assert col.index is not None and col.bm25 is not None
    alive = np.sort(store.chunk_ids(col.con, col.name))
    live_index = np.setdiff1d(col.index.ids(), np.fromiter(col.index.deleted, np.int64))
    assert np.array_equal(np.sort(live_index), alive)
    assert np.array_equal(np.sort(col.bm25.ids), alive)
    for _doc_id, ords in col.con.execute("SELECT document_id, group_concat(ord) FROM chunks GROUP BY document_id"):
        assert sorted(int(o) for o in ords.split(",")) == list(range(len(ords.split(","))))
    orphans = col.con.execute("SELECT count(*) FROM documents d WHERE NOT EXISTS "
                              "(SELECT 1 FROM chunks c WHERE c.document_id = d.id)").fetchone()[0]
    assert orphans == 0
