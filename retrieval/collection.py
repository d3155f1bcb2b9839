"""Named, persistent collections: SQLite rows (the truth) plus a FAISS index and a BM25 index (caches).

Layout: `<data_dir>/ember.db` and `<data_dir>/collections/<name>/{index.faiss, bm25/index.npz, meta.json}`.
Writes go SQLite first (one transaction per batch, bumping the collection's generation), then memory, and
the index files are saved atomically at the end, `meta.json` (generation, embedder, kind) last. On open the
index files are reconciled with SQLite by chunk id: ids missing from a file are added from the vectors
stored in SQLite, ids SQLite no longer has are removed, and a file that is unreadable or was built for
another embedder or kind is rebuilt. So a process killed at any point leaves a collection that opens
consistent: every document is wholly its old or its new version, and the indexes match the rows.

The rows live in SQLite by default, or in PostgreSQL (`database=` a postgresql:// URL, through the same
`sql.Connection` seam), which several servers share: then each server's index files are its own local cache,
and a search first compares the collection's generation (its change sequence) with the one it loaded and, when
another server wrote since, catches up (`catch_up`): the change log (`chunk_changes`) says which chunk ids
each generation added and removed, and only those chunks are read.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ember.retrieval import sql, store
from ember.retrieval.chunking import ChunkConfig
from ember.retrieval.embedders import EmbedderInfo
from ember.retrieval.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    EmbedderMismatchError,
    InvalidSearchError,
    VectorIndexError,
)
from ember.retrieval.fsutil import atomic_write_bytes, remove_stale_temps, writer_lock
from ember.retrieval.index import KINDS, METRICS, IndexSpec, VectorIndex
from ember.retrieval.lexical import BM25Index
from ember.retrieval.loaders.base import content_hash

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
AUTO_HNSW_AT = 50_000  # DESIGN.md: Flat under 50k chunks, HNSW above
MIN_TRAIN = {"ivf": 1_000, "ivfpq": 10_000}  # below this an IVF kind is served by the exact index
Events = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    metric: str = "cosine"
    kind: str = "auto"  # auto | flat | hnsw | ivf | ivfpq
    chunk_size: int = 256
    chunk_overlap: int = 32

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InvalidSearchError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.kind not in ("auto", *KINDS):
            raise InvalidSearchError(f"index kind must be auto or one of {', '.join(KINDS)}, got {self.kind!r}")
        ChunkConfig(self.chunk_size, self.chunk_overlap)


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    """A parsed, chunked and embedded document, ready to be written in one transaction."""

    source: str
    title: str
    kind: str
    content_hash: str
    size: int
    pages: int | None
    tags: tuple[str, ...]
    chunks: list[store.NewChunk]
    replaces: int | None = None  # id of the document row this one replaces

    @classmethod
    def build(cls, source: str, title: str, kind: str, content: bytes, chunks: list[store.NewChunk], *,
              size: int | None = None, pages: int | None = None, tags: tuple[str, ...] = (),
              replaces: int | None = None) -> PreparedDocument:
        """The one way a document is written (ingest, eval corpora, the LlamaIndex store): its content hash
        is `content_hash(content)`, the sha256 ingest compares a file's raw bytes with to skip it."""
        return cls(source, title, kind, content_hash(content), len(content) if size is None else size, pages,
                   tags, chunks, replaces)


def validate_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidSearchError(f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return name


def db_path(data_dir: Path) -> Path:
    return data_dir / "ember.db"


def _connect(data_dir: Path, database: str | None) -> sql.Connection:
    """`database` (a postgresql:// URL) when given, else `<data_dir>/ember.db`."""
    return store.connect(database if sql.is_postgres(database) else db_path(data_dir))


def _exists(data_dir: Path, database: str | None) -> bool:
    return sql.is_postgres(database) or db_path(data_dir).exists()


class Collection:
    def __init__(self, data_dir: Path, row: store.CollectionRow, con: sql.Connection) -> None:
        self.data_dir = data_dir
        self.row = row
        self.con = con
        self.index: VectorIndex | None = None
        self.bm25: BM25Index | None = None
        self.events: Events = lambda event: None
        self.repairs: list[str] = []  # what the last reconcile had to fix, for `collections info`

    # lifecycle -----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, data_dir: Path, name: str, embedder: EmbedderInfo, config: CollectionConfig,
               embedder_spec: str | None = None, *, database: str | None = None) -> Collection:
        """A new collection; `database` is a postgresql:// URL, else the SQLite `<data_dir>/ember.db`."""
        validate_name(name)
        con = _connect(data_dir, database)
        now = time.time()
        row = store.CollectionRow(name, embedder.model_id, embedder_spec or embedder.model_id, embedder.dim,
                                  embedder.normalized, config.metric, config.kind, config.chunk_size,
                                  config.chunk_overlap, 0, now, now)
        folder = data_dir / "collections" / name
        with writer_lock(data_dir / "collections", "the collections folder"):
            try:
                with store.transaction(con):
                    store.insert_collection(con, row)
                    store.forget_changes(con, name)  # left by a delete from before the change log
            except sql.IntegrityError:
                con.close()
                raise CollectionExistsError(f"collection {name!r} already exists") from None
            if folder.exists():  # left by a delete that was killed between its commit and its rmtree
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        return cls(data_dir, row, con)

    @classmethod
    def open(cls, data_dir: Path, name: str, *, database: str | None = None) -> Collection:
        con = _connect(data_dir, database)
        row = store.get_collection(con, name)
        if row is None:
            known = ", ".join(r.name for r in store.list_collections(con)) or "none yet"
            con.close()
            raise CollectionNotFoundError(f"no collection named {name!r} (collections: {known})",
                                          hint=f"Create it with `ember ingest PATH --collection {name}`.")
        return cls(data_dir, row, con)

    @classmethod
    def open_or_create(cls, data_dir: Path, name: str, embedder: EmbedderInfo, config: CollectionConfig,
                       embedder_spec: str | None = None, *, database: str | None = None) -> Collection:
        try:
            return cls.open(data_dir, name, database=database)
        except CollectionNotFoundError:
            return cls.create(data_dir, name, embedder, config, embedder_spec, database=database)

    @staticmethod
    def names(data_dir: Path, *, database: str | None = None) -> list[store.CollectionRow]:
        if not _exists(data_dir, database):
            return []
        con = _connect(data_dir, database)
        try:
            return store.list_collections(con)
        finally:
            con.close()

    @staticmethod
    def listing(data_dir: Path, *, database: str | None = None) -> list[tuple[store.CollectionRow, int, int]]:
        """Every collection with its numbers of documents and chunks, through one connection."""
        if not _exists(data_dir, database):
            return []
        con = _connect(data_dir, database)
        try:
            return [(row, *store.counts(con, row.name)) for row in store.list_collections(con)]
        finally:
            con.close()

    @staticmethod
    def delete(data_dir: Path, name: str, *, database: str | None = None) -> None:
        col = Collection.open(data_dir, name, database=database)
        with writer_lock(col.folder, f"collection {name!r}"), store.transaction(col.con):
            col.con.execute("DELETE FROM shadow_vectors WHERE collection = ?", (name,))
            store.forget_changes(col.con, name)  # a new collection of that name counts generations from 0
            col.con.execute("DELETE FROM collections WHERE name = ?", (name,))
        shutil.rmtree(col.folder, ignore_errors=True)
        col.close()

    def close(self) -> None:
        self.con.close()

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def folder(self) -> Path:
        return self.data_dir / "collections" / self.row.name

    @property
    def embedder(self) -> EmbedderInfo:
        return EmbedderInfo(self.row.embedder_id, self.row.dim, self.row.normalized)

    def lock(self) -> AbstractContextManager[None]:
        return writer_lock(self.folder, f"collection {self.name!r}")

    def remove_stale_files(self) -> None:
        """Temp files and a shadow index a killed writer left (call with `lock()` held)."""
        for folder in (self.folder, self.folder / "bm25"):
            remove_stale_temps(folder)
        (self.folder / "index.next.faiss").unlink(missing_ok=True)

    def check_embedder(self, info: EmbedderInfo, action: str) -> None:
        if info != self.embedder:
            raise EmbedderMismatchError(
                f"cannot {action} collection {self.name!r} with {info.describe()}: its vectors were made with "
                f"{self.embedder.describe()}",
                hint=f"Use --embedder {self.row.embedder_spec}, or convert the collection with "
                     f"`ember collections reembed {self.name} --embedder ...`.")

    # indexes -------------------------------------------------------------------------------------------
    def index_spec(self, n: int) -> IndexSpec:
        kind = self.row.kind
        if kind == "auto":
            kind = "hnsw" if n >= AUTO_HNSW_AT else "flat"
        elif kind in MIN_TRAIN and n < MIN_TRAIN[kind]:
            kind = "flat"
        return IndexSpec(dim=self.row.dim, metric=self.row.metric, kind=kind)

    def read_meta(self) -> dict | None:
        try:
            return json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None

    def build_index(self, spec: IndexSpec, table: str = "chunks") -> VectorIndex:
        parts = list(store.iter_vectors(self.con, self.name, spec.dim, table))
        index = VectorIndex(spec)
        if parts:
            index.add(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return index

    def load_indexes(self, force: bool = False) -> None:
        """Load the index files and reconcile them with SQLite (in memory; a writer saves the result)."""
        if self.index is not None and not force:
            return
        self.repairs = []
        alive = store.chunk_ids(self.con, self.name)
        spec = self.index_spec(len(alive))
        meta = self.read_meta()
        index = None
        path = self.folder / "index.faiss"
        if meta and meta.get("embedder") == self.row.embedder_id and meta.get("kind") == spec.kind and path.exists():
            try:
                index = VectorIndex.load(path, spec, alive=alive)
            except VectorIndexError as e:
                self.repairs.append(f"rebuilt the vector index ({e.message})")
        elif alive.size:
            self.repairs.append("rebuilt the vector index (missing, or made for another embedder or kind)")
        if index is None:
            index = self.build_index(spec)
        else:
            missing = np.setdiff1d(alive, index.ids())
            if missing.size:
                index.add(*store.vectors_for(self.con, missing, spec.dim))
                self.repairs.append(f"added {missing.size} vectors the index file did not have yet")
        self.index = index
        self.bm25 = self._load_bm25(alive)

    def _load_bm25(self, alive: np.ndarray) -> BM25Index:
        path = self.folder / "bm25" / "index.npz"
        bm25 = None
        if path.exists():
            try:
                bm25 = BM25Index.load(path)
            except VectorIndexError as e:
                self.repairs.append(f"rebuilt the BM25 index ({e.message})")
        if bm25 is None:
            rows = list(store.all_chunk_texts(self.con, self.name))
            return BM25Index.from_corpus([r[0] for r in rows], [r[1] for r in rows])
        stale = np.setdiff1d(bm25.ids, alive)
        if stale.size:
            bm25.remove(stale)
        missing = np.setdiff1d(alive, bm25.ids)
        if missing.size:
            rows = store.chunk_texts(self.con, missing)
            bm25.add([r[0] for r in rows], [r[1] for r in rows])
            self.repairs.append(f"added {missing.size} chunks the BM25 file did not have yet")
        return bm25

    def refresh(self) -> None:
        """Pick up what another process committed since this one loaded (cheap when nothing changed)."""
        row = store.get_collection(self.con, self.name)
        if row is None:
            raise CollectionNotFoundError(f"collection {self.name!r} was deleted")
        if row.embedder_id != self.row.embedder_id or self.index is None:
            self.row = row
            self.load_indexes(force=True)
        elif row.generation != self.row.generation:
            since, self.row = self.row.generation, row
            self.catch_up(since)

    def catch_up(self, since: int | None = None) -> None:
        """Bring the in-memory indexes in line with the database after another writer (another process, or
        another server on the same PostgreSQL) committed. The generation is the collection's change sequence:
        from generation `since` on, the change log says which chunks each generation added and removed, and
        only those are read. Without a complete log (pruned, a re-embed, `since` unknown) every chunk id is
        compared instead; the index files are never read."""
        assert self.index is not None and self.bm25 is not None
        log = None if since is None else store.changes_since(self.con, self.name, since, self.row.generation)
        if log is not None:
            for added, removed in log:
                self._replay(added, removed)
            if self.index_spec(self.index.ntotal).kind != self.index.spec.kind:
                self.load_indexes(force=True)
            return
        alive = store.chunk_ids(self.con, self.name)
        if self.index_spec(len(alive)).kind != self.index.spec.kind:
            self.load_indexes(force=True)
            return
        stale = np.setdiff1d(self.index.ids(), alive)
        if stale.size:
            self.index.remove(stale)
        stale_bm25 = np.setdiff1d(self.bm25.ids, alive)
        if stale_bm25.size:
            self.bm25.remove(stale_bm25)
        missing = np.setdiff1d(alive, self.index.ids())
        if missing.size:
            self.index.add(*store.vectors_for(self.con, missing, self.row.dim))
        missing_bm25 = np.setdiff1d(alive, self.bm25.ids)
        if missing_bm25.size:
            rows = store.chunk_texts(self.con, missing_bm25)
            self.bm25.add([r[0] for r in rows], [r[1] for r in rows])

    def _replay(self, added: np.ndarray, removed: np.ndarray) -> None:
        """One generation of the change log on the in-memory indexes (ids already there are not added twice;
        chunks added and removed again since are simply not found)."""
        assert self.index is not None and self.bm25 is not None
        if removed.size:
            self.index.remove(removed)
            self.bm25.remove(removed)
        new = np.setdiff1d(added, self.index.ids())
        if new.size:
            got = store.vectors_for(self.con, new, self.row.dim)
            if got[0].size:
                self.index.add(*got)
        new_bm25 = np.setdiff1d(added, self.bm25.ids)
        if new_bm25.size:
            rows = store.chunk_texts(self.con, new_bm25)
            if rows:
                self.bm25.add([r[0] for r in rows], [r[1] for r in rows])

    # writing (callers hold `lock()`) ----------------------------------------------------------------------
    def apply(self, docs: Sequence[PreparedDocument], remove: Sequence[int] = ()) -> list[int]:
        """Add documents and delete document rows in one transaction, then update the in-memory indexes."""
        self.load_indexes()
        assert self.index is not None and self.bm25 is not None
        replaced = [d.replaces for d in docs if d.replaces is not None]
        gone_ids, new_ids, texts, vectors = np.zeros(0, np.int64), [], [], []
        with store.transaction(self.con):
            seen = store.lock_collection(self.con, self.name)  # PostgreSQL: writers of one collection queue here
            if seen is None:
                raise CollectionNotFoundError(f"collection {self.name!r} was deleted")
            since = self.row.generation
            behind = seen != since  # another server wrote since we last looked
            if remove or replaced:
                gone_ids = store.chunk_ids(self.con, self.name, [*remove, *replaced])
                store.delete_documents(self.con, [*remove, *replaced])
            for d in docs:
                new_ids += store.insert_document(self.con, self.name, d.source, d.title, d.kind, d.content_hash,
                                                 d.size, d.pages, d.tags, d.chunks)
                texts += [c.text for c in d.chunks]
                vectors += [c.vector for c in d.chunks]
            generation = store.bump_generation(self.con, self.name)
            store.log_change(self.con, self.name, generation, new_ids, gone_ids)
            row = store.get_collection(self.con, self.name)  # read inside: another writer may commit right after
            self.events("committing")
        assert row is not None and row.generation == generation
        self.row = row
        self.events("committed")
        if behind:  # replay every generation since ours, this write's included
            self.catch_up(since)
            return new_ids
        self.index.remove(gone_ids)
        self.bm25.remove(gone_ids)
        if new_ids:
            self.index.add(np.asarray(new_ids, np.int64), np.stack(vectors))
            self.bm25.add(new_ids, texts)
        return new_ids

    def save(self) -> None:
        """Write index.faiss, bm25/index.npz, then meta.json, each atomically."""
        self.load_indexes()
        assert self.index is not None and self.bm25 is not None
        n = self.index.ntotal
        spec = self.index_spec(n)
        stale_kind = spec.kind != self.index.spec.kind
        if stale_kind or len(self.index.deleted) > 0.2 * max(n, 1):
            self.index = self.build_index(spec)
        path = self.folder / "index.faiss"
        self.events("saving")
        if self.index.index is not None:
            self.index.save(path)
        else:
            path.unlink(missing_ok=True)
        self.events("index_saved")
        self.bm25.save(self.folder / "bm25" / "index.npz")
        self.events("bm25_saved")
        meta = {"format": 1, "name": self.name, "generation": self.row.generation, "embedder": self.row.embedder_id,
                "dim": self.row.dim, "normalized": self.row.normalized, "metric": self.row.metric,
                "kind": self.index.spec.kind, "chunks": n}
        atomic_write_bytes(self.folder / "meta.json", json.dumps(meta, indent=2).encode())
        self.events("meta_saved")

    # reading --------------------------------------------------------------------------------------------
    def allowed_ids(self, source: str | None = None, tag: str | None = None) -> np.ndarray | None:
        if not source and not tag:
            return None
        return store.filtered_chunk_ids(self.con, self.name, source, tag)

    def search_dense(self, vector: np.ndarray, k: int, allow: np.ndarray | None = None) -> list[tuple[int, float]]:
        self.load_indexes()
        assert self.index is not None
        scores, ids = self.index.search(vector.reshape(1, -1), k, allow)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def search_bm25(self, query: str, k: int, allow: np.ndarray | None = None) -> list[tuple[int, float]]:
        self.load_indexes()
        assert self.bm25 is not None
        scores, ids = self.bm25.search(query, k, allow)
        return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]

    def cosine(self, vector: np.ndarray, ids: Sequence[int]) -> dict[int, float]:
        """Cosine similarity of `vector` to the stored vectors of chunks `ids` (those that exist)."""
        if not ids:
            return {}
        got, vectors = store.vectors_for(self.con, ids, self.row.dim)
        q = np.asarray(vector, np.float32)
        cos = vectors @ q / np.maximum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(q), 1e-12)
        return {int(i): float(c) for i, c in zip(got, cos, strict=True)}

    def set_tags(self, document_id: int, tags: Sequence[str]) -> None:
        """Replace a document's tags (callers hold `lock()`)."""
        with store.transaction(self.con):
            store.set_tags(self.con, document_id, tuple(tags))

    def chunks(self, ids: Sequence[int]) -> dict[int, store.ChunkRow]:
        return store.get_chunks(self.con, ids)

    def document_chunks(self, document_id: int) -> list[store.ChunkRow]:
        """A document's chunks in text order (empty when the collection has no such document)."""
        ids = [int(i) for i in store.chunk_ids(self.con, self.name, [int(document_id)])]
        return sorted(self.chunks(ids).values(), key=lambda c: c.start)

    def document_text(self, document_id: int) -> str | None:
        """A document's text rebuilt from its chunks (which overlap: each adds what extends past the
        previous end), or None when the collection has no such document."""
        chunks = self.document_chunks(document_id)
        if not chunks:
            return None
        text, end = "", 0
        for c in chunks:
            if c.end <= end:
                continue
            skip = max(0, end - c.start)
            text += c.text[skip:] if skip < len(c.text) else ""
            end = c.end
        return text

    def documents(self) -> dict[str, store.DocumentRow]:
        return store.documents(self.con, self.name)

    def counts(self) -> tuple[int, int]:
        return store.counts(self.con, self.name)
