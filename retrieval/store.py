"""The database side of collections: collections, documents, chunks (SQLite `<data_dir>/ember.db` in WAL
mode, or PostgreSQL through the same `sql.Connection` seam).

The database is the source of truth. Each chunk row holds its text, its character span, and its vector, so the
FAISS and BM25 files can always be brought back in line with it (`Collection` reconciles them by chunk id on
open) without embedding anything again. Chunk ids come from AUTOINCREMENT (a sequence in PostgreSQL) and are
never reused, so an id that a stale index file still holds can only mean "deleted since". Every write is one
transaction.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ember.retrieval import sql
from ember.retrieval.sql import Connection

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    embedder_id TEXT NOT NULL,
    embedder_spec TEXT NOT NULL,
    dim INTEGER NOT NULL,
    normalized INTEGER NOT NULL,
    metric TEXT NOT NULL,
    kind TEXT NOT NULL,
    chunk_size INTEGER NOT NULL,
    chunk_overlap INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    pages INTEGER,
    tags TEXT NOT NULL DEFAULT '[]',
    ingested_at REAL NOT NULL,
    UNIQUE (collection, source)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    text TEXT NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    page INTEGER,
    headings TEXT NOT NULL DEFAULT '[]',
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id);
CREATE INDEX IF NOT EXISTS documents_collection ON documents(collection);
CREATE TABLE IF NOT EXISTS shadow_vectors (
    collection TEXT NOT NULL,
    chunk_id INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (collection, chunk_id)
);
"""


@dataclass(frozen=True, slots=True)
class CollectionRow:
    name: str
    embedder_id: str
    embedder_spec: str  # how to load it again: a name, a folder or URL#MODEL
    dim: int
    normalized: bool
    metric: str
    kind: str
    chunk_size: int
    chunk_overlap: int
    generation: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class DocumentRow:
    id: int
    source: str
    title: str
    kind: str
    content_hash: str
    size: int
    pages: int | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChunkRow:
    id: int
    document_id: int
    ord: int
    text: str
    start: int
    end: int
    tokens: int
    page: int | None
    headings: tuple[str, ...]
    source: str
    title: str


@dataclass(frozen=True, slots=True)
class NewChunk:
    ord: int
    text: str
    start: int
    end: int
    tokens: int
    page: int | None
    headings: tuple[str, ...]
    vector: np.ndarray


PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    embedder_id TEXT NOT NULL,
    embedder_spec TEXT NOT NULL,
    dim INTEGER NOT NULL,
    normalized INTEGER NOT NULL,
    metric TEXT NOT NULL,
    kind TEXT NOT NULL,
    chunk_size INTEGER NOT NULL,
    chunk_overlap INTEGER NOT NULL,
    generation BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id BIGSERIAL PRIMARY KEY,
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE ON UPDATE CASCADE,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    size BIGINT NOT NULL,
    pages INTEGER,
    tags TEXT NOT NULL DEFAULT '[]',
    ingested_at DOUBLE PRECISION NOT NULL,
    UNIQUE (collection, source)
);
CREATE TABLE IF NOT EXISTS chunks (
    id BIGSERIAL PRIMARY KEY,
    document_id BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    text TEXT NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    page INTEGER,
    headings TEXT NOT NULL DEFAULT '[]',
    vector BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id);
CREATE INDEX IF NOT EXISTS documents_collection ON documents(collection);
CREATE TABLE IF NOT EXISTS shadow_vectors (
    collection TEXT NOT NULL,
    chunk_id BIGINT NOT NULL,
    vector BYTEA NOT NULL,
    PRIMARY KEY (collection, chunk_id)
)
"""
# The change log: what each generation of a collection added and removed (chunk ids, int64 bytes), so a
# server whose cache is a few generations behind reads just those chunks. Pruned to the last CHANGES_KEPT.
CHANGES = """
CREATE TABLE IF NOT EXISTS chunk_changes (
    collection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    added {blob} NOT NULL,
    removed {blob} NOT NULL,
    PRIMARY KEY (collection, generation)
)
"""
CHANGES_KEPT = 1000
MIGRATIONS: dict[str, sql.Migrations] = {"sqlite": [SCHEMA, CHANGES.format(blob="BLOB")],
                                         "postgresql": [PG_SCHEMA, CHANGES.format(blob="BYTEA")]}


def connect(database: Path | str) -> Connection:
    """A connection to the collections' database (a SQLite file, or a postgresql:// URL), its schema
    migrated to the current version."""
    con = sql.connect(database)
    try:
        sql.migrate(con, "retrieval", MIGRATIONS)
    except BaseException:
        con.close()
        raise
    return con


def transaction(con: Connection) -> AbstractContextManager[None]:
    return con.transaction()


def get_collection(con: Connection, name: str) -> CollectionRow | None:
    row = con.execute("SELECT name, embedder_id, embedder_spec, dim, normalized, metric, kind, chunk_size, "
                      "chunk_overlap, generation, created_at, updated_at FROM collections WHERE name = ?",
                      (name,)).fetchone()
    if row is None:
        return None
    return CollectionRow(row[0], row[1], row[2], int(row[3]), bool(row[4]), row[5], row[6], int(row[7]), int(row[8]),
                         int(row[9]), float(row[10]), float(row[11]))


def list_collections(con: Connection) -> list[CollectionRow]:
    names = [r[0] for r in con.execute("SELECT name FROM collections ORDER BY name")]
    return [c for n in names if (c := get_collection(con, n))]


def insert_collection(con: Connection, row: CollectionRow) -> None:
    con.execute("INSERT INTO collections VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (row.name, row.embedder_id, row.embedder_spec, row.dim, int(row.normalized), row.metric, row.kind,
                 row.chunk_size, row.chunk_overlap, row.generation, row.created_at, row.updated_at))


def log_change(con: Connection, name: str, generation: int, added: Sequence[int], removed: np.ndarray) -> None:
    """Record what `generation` changed (inside the writer's transaction), and forget old generations."""
    con.execute("INSERT INTO chunk_changes (collection, generation, added, removed) VALUES (?, ?, ?, ?)",
                (name, generation, np.asarray(added, "<i8").tobytes(), np.asarray(removed, "<i8").tobytes()))
    con.execute("DELETE FROM chunk_changes WHERE collection = ? AND generation <= ?", (name, generation - CHANGES_KEPT))


def changes_since(con: Connection, name: str, generation: int, upto: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(added, removed) chunk ids of each generation after `generation` up to `upto`, in order; None when the
    log does not have every one of them (pruned, or a writer that keeps no log, such as a re-embed)."""
    rows = con.execute("SELECT generation, added, removed FROM chunk_changes WHERE collection = ? AND generation > ? "
                       "AND generation <= ? ORDER BY generation", (name, generation, upto)).fetchall()
    if [int(r[0]) for r in rows] != list(range(generation + 1, upto + 1)):
        return None
    return [(np.frombuffer(bytes(r[1]), "<i8").astype(np.int64), np.frombuffer(bytes(r[2]), "<i8").astype(np.int64))
            for r in rows]


def forget_changes(con: Connection, name: str) -> None:
    con.execute("DELETE FROM chunk_changes WHERE collection = ?", (name,))


def bump_generation(con: Connection, name: str) -> int:
    con.execute("UPDATE collections SET generation = generation + 1, updated_at = ? WHERE name = ?",
                (time.time(), name))
    return int(con.execute("SELECT generation FROM collections WHERE name = ?", (name,)).fetchone()[0])


def documents(con: Connection, collection: str) -> dict[str, DocumentRow]:
    rows = con.execute("SELECT id, source, title, kind, content_hash, size, pages, tags FROM documents "
                       "WHERE collection = ?", (collection,))
    return {r[1]: DocumentRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(json.loads(r[7]))) for r in rows}


def counts(con: Connection, collection: str) -> tuple[int, int]:
    docs = con.execute("SELECT count(*) FROM documents WHERE collection = ?", (collection,)).fetchone()[0]
    chunks = con.execute("SELECT count(*) FROM chunks JOIN documents d ON d.id = chunks.document_id "
                         "WHERE d.collection = ?", (collection,)).fetchone()[0]
    return int(docs), int(chunks)


def chunk_ids(con: Connection, collection: str, document_ids: Sequence[int] | None = None) -> np.ndarray:
    query = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.collection = ?"
    args: list[Any] = [collection]
    if document_ids is not None:
        query += f" AND d.id IN ({','.join('?' * len(document_ids))})"
        args += list(document_ids)
    return np.fromiter((r[0] for r in con.execute(query, args)), np.int64)


def filtered_chunk_ids(con: Connection, collection: str, source: str | None, tag: str | None) -> np.ndarray:
    """Chunk ids of documents whose source matches the glob `source` (`*` wildcards) and that carry `tag`."""
    query = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.collection = ?"
    args: list[Any] = [collection]
    pg = con.dialect == "postgresql"
    if source:
        patterns = [source, f"*/{source}" if not source.startswith(("/", "*")) else source]
        query += " AND (d.source ~ ? OR d.source ~ ?)" if pg else " AND (d.source GLOB ? OR d.source GLOB ?)"
        args += [glob_regex(p) for p in patterns] if pg else patterns
    if tag:
        query += (" AND EXISTS (SELECT 1 FROM json_array_elements_text(d.tags::json) t WHERE t = ?)" if pg
                  else " AND EXISTS (SELECT 1 FROM json_each(d.tags) WHERE json_each.value = ?)")
        args.append(tag)
    return np.fromiter((r[0] for r in con.execute(query, args)), np.int64)


def iter_vectors(con: Connection, collection: str, dim: int, table: str = "chunks",
                 batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of every chunk, in batches; `table="shadow_vectors"` reads a re-embed in progress."""
    if table == "chunks":
        query = ("SELECT c.id, c.vector FROM chunks c JOIN documents d ON d.id = c.document_id "
               "WHERE d.collection = ? ORDER BY c.id")
    else:
        query = "SELECT chunk_id, vector FROM shadow_vectors WHERE collection = ? ORDER BY chunk_id"
    cur = con.execute(query, (collection,))
    while rows := cur.fetchmany(batch):
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
        yield ids, vectors


def chunk_texts(con: Connection, ids: Sequence[int]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    ids = [int(i) for i in ids]
    for i in range(0, len(ids), 900):
        part = ids[i:i + 900]
        out += con.execute(f"SELECT id, text FROM chunks WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
    return out


def all_chunk_texts(con: Connection, collection: str) -> Iterator[tuple[int, str]]:
    yield from con.execute("SELECT c.id, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
                           "WHERE d.collection = ? ORDER BY c.id", (collection,))


def get_chunks(con: Connection, ids: Sequence[int]) -> dict[int, ChunkRow]:
    out: dict[int, ChunkRow] = {}
    ids = [int(i) for i in ids]
    for i in range(0, len(ids), 900):
        part = ids[i:i + 900]
        rows = con.execute("SELECT c.id, c.document_id, c.ord, c.text, c.char_start, c.char_end, c.tokens, c.page, "
                           "c.headings, d.source, d.title FROM chunks c JOIN documents d ON d.id = c.document_id "
                           f"WHERE c.id IN ({','.join('?' * len(part))})", part)
        for r in rows:
            out[r[0]] = ChunkRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], tuple(json.loads(r[8])), r[9], r[10])
    return out


def next_chunk_id(con: Connection) -> int:
    row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
    return (int(row[0]) if row else 0) + 1


def new_chunk_ids(con: Connection, n: int) -> list[int]:
    """`n` fresh chunk ids (inside the caller's transaction): the next of AUTOINCREMENT in SQLite (the
    write lock is held), drawn from the sequence in PostgreSQL (never handed out twice, even to a
    transaction that rolls back)."""
    if con.dialect == "postgresql":
        return [int(r[0]) for r in con.execute("SELECT nextval('chunks_id_seq') FROM generate_series(1, ?)", (n,))]
    first = next_chunk_id(con)
    return list(range(first, first + n))


def glob_regex(pattern: str) -> str:
    """A GLOB pattern (`*`, `?`) as an anchored POSIX regular expression (PostgreSQL's `~`)."""
    out = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return f"^{out}$"


def lock_collection(con: Connection, name: str) -> int | None:
    """Inside a transaction: the collection's generation, its row locked until commit (PostgreSQL; SQLite's
    `BEGIN IMMEDIATE` already holds the whole database), or None when it was deleted."""
    suffix = " FOR UPDATE" if con.dialect == "postgresql" else ""
    row = con.execute(f"SELECT generation FROM collections WHERE name = ?{suffix}", (name,)).fetchone()
    return None if row is None else int(row[0])


def insert_document(con: Connection, collection: str, source: str, title: str, kind: str, content_hash: str,
                    size: int, pages: int | None, tags: Sequence[str], chunks: Sequence[NewChunk]) -> list[int]:
    """Insert a document and its chunks (inside the caller's transaction); returns the new chunk ids."""
    doc_id = con.execute("INSERT INTO documents (collection, source, title, kind, content_hash, size, pages, tags, "
                         "ingested_at) VALUES (?,?,?,?,?,?,?,?,?) RETURNING id",
                         (collection, source, title, kind, content_hash, size, pages, json.dumps(list(tags)),
                          time.time())).fetchone()[0]
    ids = new_chunk_ids(con, len(chunks)) if chunks else []
    con.executemany("INSERT INTO chunks (id, document_id, ord, text, char_start, char_end, tokens, page, headings, "
                    "vector) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(i, doc_id, c.ord, c.text, c.start, c.end, c.tokens, c.page, json.dumps(list(c.headings)),
                      np.ascontiguousarray(c.vector, np.float32).tobytes()) for i, c in zip(ids, chunks, strict=True)])
    return ids


def delete_documents(con: Connection, document_ids: Sequence[int]) -> None:
    for i in range(0, len(document_ids), 900):
        part = list(document_ids[i:i + 900])
        con.execute(f"DELETE FROM documents WHERE id IN ({','.join('?' * len(part))})", part)


def vectors_for(con: Connection, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) for the given chunk ids (those that exist), in id order."""
    got: list[tuple[int, bytes]] = []
    ids = [int(i) for i in ids]
    for i in range(0, len(ids), 900):
        part = ids[i:i + 900]
        got += con.execute(f"SELECT id, vector FROM chunks WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
    got.sort()
    out_ids = np.fromiter((r[0] for r in got), np.int64, len(got))
    vectors = np.frombuffer(b"".join(r[1] for r in got), np.float32).reshape(len(got), dim)
    return out_ids, vectors


def set_tags(con: Connection, document_id: int, tags: Sequence[str]) -> None:
    con.execute("UPDATE documents SET tags = ? WHERE id = ?", (json.dumps(list(tags)), document_id))
