"""What the server holds while it runs: its `Wiring` (backend, embedders, collections, RAG), stores, jobs.

Everything model- and collection-shaped comes from the wiring (platform/wiring.py), as it does for the CLI:
one engine batching every request, embedders loaded once on the configured device, each collection opened
once and searched by one shared, locked `Retriever`. Ingest jobs from uploads run one at a time on a
worker thread, each with its own connection, so searches keep working while a file is being indexed.
"""

from __future__ import annotations

import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.platform.server.db import Database
from ember.platform.server.keys import KeyStore
from ember.platform.server.limiter import Limiter
from ember.platform.server.metrics import Metrics
from ember.platform.server.sessions import SessionStore
from ember.platform.server.users import Principal, UserStore
from ember.platform.wiring import Wiring
from ember.retrieval.collection import Collection
from ember.retrieval.embedders import Embedder
from ember.retrieval.rag import RagPipeline
from ember.retrieval.retriever import Retriever

RAG_PREFIX = "ember-rag:"


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
    def __init__(self, wiring: Wiring) -> None:
        self.wiring, self.settings, self.model_name = wiring, wiring.settings, wiring.model_name
        self.backend = wiring.backend()
        settings = self.settings
        self.db = Database(settings.database)
        self.keys, self.sessions, self.users = KeyStore(self.db), SessionStore(self.db), UserStore(self.db)
        s = settings.server
        self.limiter = Limiter(s.max_concurrent, s.max_queued, s.retry_after_s)
        self.metrics = Metrics()
        self.started = time.time()
        self.jobs: dict[str, Job] = {}
        self._ingest = ThreadPoolExecutor(1, thread_name_prefix="ember-ingest")
        self.metrics.gauges["ember_requests_active"] = lambda: self.limiter.active
        self.metrics.gauges["ember_requests_queued"] = lambda: self.limiter.waiting
        self.metrics.gauges["ember_requests_rejected_total"] = lambda: self.limiter.rejected
        blocks = self.backend.capabilities.kv_blocks
        if blocks is not None:
            self.metrics.gauges["ember_kv_blocks_used"] = lambda: blocks()[0]
            self.metrics.gauges["ember_kv_blocks_total"] = lambda: blocks()[1]

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def context_window(self) -> int:
        return self.wiring.context_window()

    def embedder(self, spec: str | None = None) -> Embedder:
        return self.wiring.embedder(spec)

    def rag(self, name: str) -> RagPipeline:
        """The collection's RAG pipeline (its retriever is shared and locked; generation runs outside it)."""
        return self.wiring.rag(name)

    def retriever(self, name: str) -> Retriever:
        return self.wiring.retriever(name)

    def forget(self, name: str) -> None:
        self.wiring.forget(name)

    # collections -------------------------------------------------------------------------------------
    def create_collection(self, name: str, owner: Principal | None = None) -> Collection:
        col = self.wiring.create_collection(name)
        self.users.forget_collection(name)  # grants a delete killed before it dropped them must not carry over
        if owner is not None:
            self.users.set_owner(name, owner)
        return col

    def collection_names(self) -> list[str]:
        return [r.name for r in Collection.names(self.settings.data_dir, database=self.settings.database_url)]

    def delete_collection(self, name: str) -> None:
        self.forget(name)
        Collection.delete(self.settings.data_dir, name, database=self.settings.database_url)
        self.users.forget_collection(name)
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
            col = self.wiring.open_collection(job.collection)
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
        """Stop the ingest worker and close the collections and the database (the backend is the caller's)."""
        self._ingest.shutdown(wait=True)
        self.wiring.close()
        self.db.close()
