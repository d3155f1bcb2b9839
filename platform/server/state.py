"""What the server holds while it runs: settings, the backend, the embedder, open collections, stores, jobs.

The backend is built once (one engine, batching every request); the embedder loads on first use; each
collection is opened once and searched under its own lock (its SQLite connection and in-memory indexes
are shared by the request threads). Ingest jobs from uploads run one at a time on a worker thread, each
with its own connection, so searches keep working while a file is being indexed.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.model.backends.base import Backend, Message
from ember.platform.server.db import Database
from ember.platform.server.keys import KeyStore
from ember.platform.server.limiter import Limiter
from ember.platform.server.metrics import Metrics
from ember.platform.server.sessions import SessionStore
from ember.platform.settings import Settings
from ember.retrieval.collection import Collection, CollectionConfig
from ember.retrieval.embedders import Embedder
from ember.retrieval.rag import RagConfig, RagPipeline, Retrieved
from ember.retrieval.retriever import Hit, Retriever, SearchFilter

RAG_PREFIX = "ember-rag:"


class LockedRag(RagPipeline):
    """A pipeline whose retrieval holds the collection's lock (generation runs outside it)."""

    def __init__(self, retriever: Retriever, backend: Backend, config: RagConfig, lock: threading.Lock) -> None:
        super().__init__(retriever, backend, config)
        self.lock = lock

    def retrieve(self, question: str, history: list[Message] | None = None,
                 where: SearchFilter | None = None) -> Retrieved:
        query = self.standalone_query(question, history)  # may generate: not under the lock
        with self.lock:
            return super().retrieve(query, None, where)

    def search(self, query: str, mode: str | None, k: int | None) -> list[Hit]:
        with self.lock:
            return self.retriever.search(query, mode=mode, k=k)


@dataclass(slots=True)
class Job:
    id: str
    collection: str
    files: list[str]
    status: str = "queued"  # queued | running | done | failed
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "ingest.job", "collection": self.collection, "files": self.files,
                "status": self.status, "created_at": self.created_at, "finished_at": self.finished_at,
                "added": self.added, "updated": self.updated, "skipped": self.skipped, "chunks": self.chunks,
                "error": self.error}


class ServerState:
    def __init__(self, settings: Settings, backend: Backend, model_name: str,
                 embedder_factory: Callable[[str], Embedder]) -> None:
        self.settings, self.backend, self.model_name = settings, backend, model_name
        self.embedder_factory = embedder_factory
        self.db = Database(settings.db_path)
        self.keys, self.sessions = KeyStore(self.db), SessionStore(self.db)
        s = settings.server
        self.limiter = Limiter(s.max_concurrent, s.max_queued, s.retry_after_s)
        self.metrics = Metrics()
        self.started = time.time()
        self._embedders: dict[str, Embedder] = {}
        self._rags: dict[str, LockedRag] = {}
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self._ingest = ThreadPoolExecutor(1, thread_name_prefix="ember-ingest")
        self.metrics.gauges["ember_requests_active"] = lambda: self.limiter.active
        self.metrics.gauges["ember_requests_queued"] = lambda: self.limiter.waiting
        self.metrics.gauges["ember_requests_rejected_total"] = lambda: self.limiter.rejected
        blocks = kv_blocks(backend)
        if blocks is not None:
            self.metrics.gauges["ember_kv_blocks_used"] = lambda: blocks.num_used
            self.metrics.gauges["ember_kv_blocks_total"] = lambda: len(blocks.blocks)

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def context_window(self) -> int:
        if self.settings.server.context_window:
            return self.settings.server.context_window
        engine = getattr(self.backend, "engine", None)
        return int(getattr(engine, "max_model_len", 2048))

    def embedder(self, spec: str | None = None) -> Embedder:
        spec = spec or self.settings.retrieval.embedder
        with self._lock:
            if spec not in self._embedders:
                self._embedders[spec] = self.embedder_factory(spec)
            return self._embedders[spec]

    def rag(self, name: str) -> LockedRag:
        with self._lock:
            rag = self._rags.get(name)
        if rag is not None:
            return rag
        col = Collection.open(self.settings.data_dir, name)
        try:
            embedder = self.embedder(col.row.embedder_spec)
            r = self.settings.retrieval
            retriever = Retriever(col, embedder, mode=r.mode, k=r.k)
            s = self.settings.server
            window = self.context_window()
            config = RagConfig(mode=r.mode, k=r.k, context_window=window,
                               max_answer_tokens=min(s.max_tokens, window // 2), min_score=s.min_score)
        except BaseException:
            col.close()
            raise
        rag = LockedRag(retriever, self.backend, config, threading.Lock())
        with self._lock:
            return self._rags.setdefault(name, rag)

    def forget(self, name: str) -> None:
        with self._lock:
            rag = self._rags.pop(name, None)
        if rag is not None:
            with rag.lock:
                rag.retriever.collection.close()

    # collections -------------------------------------------------------------------------------------
    def create_collection(self, name: str) -> Collection:
        r = self.settings.retrieval
        embedder = self.embedder()
        return Collection.create(self.settings.data_dir, name, embedder.info,
                                 CollectionConfig(r.metric, r.index, r.chunk_size, r.chunk_overlap), r.embedder)

    def delete_collection(self, name: str) -> None:
        self.forget(name)
        Collection.delete(self.settings.data_dir, name)
        shutil.rmtree(self.uploads_dir / name, ignore_errors=True)

    def submit_ingest(self, name: str, files: list[Path]) -> Job:
        job = Job("ingest-" + uuid.uuid4().hex[:12], name, [f.name for f in files])
        self.jobs[job.id] = job
        self._ingest.submit(self._run_ingest, job, files)
        return job

    def _run_ingest(self, job: Job, files: list[Path]) -> None:
        from ember.retrieval.ingest import IngestOptions, ingest

        job.status = "running"
        try:
            col = Collection.open(self.settings.data_dir, job.collection)
            try:
                embedder = self.embedder(col.row.embedder_spec)
                options = IngestOptions(max_bytes=int(self.settings.retrieval.max_file_mb * 1e6))
                for f in files:  # one file at a time: a file is its own root, other documents stay
                    report = ingest(col, embedder, f, options)
                    job.added += [Path(s).name for s in report.added]
                    job.updated += [Path(s).name for s in report.updated]
                    job.skipped += [{"file": Path(s.path).name, "reason": s.reason} for s in report.skipped]
                    job.chunks += report.chunks
            finally:
                col.close()
            for s in job.skipped:  # a refused document is not kept around
                (self.uploads_dir / job.collection / s["file"]).unlink(missing_ok=True)
            job.status = "done"
        except BaseException as e:
            job.status, job.error = "failed", str(e)
        finally:
            job.finished_at = time.time()

    def close(self) -> None:
        self._ingest.shutdown(wait=True)
        for name in list(self._rags):
            self.forget(name)
        self.db.close()


def kv_blocks(backend: Backend) -> Any:
    engine = getattr(backend, "engine", None)
    return getattr(engine, "blocks", None)
