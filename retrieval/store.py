"""The SQLite side of collections (`<data_dir>/ember.db`, WAL): collections, documents, chunks.

SQLite is the source of truth. Each chunk row holds its text, its character span, and its vector, so the
FAISS and BM25 files can always be brought back in line with it (`Collection` reconciles them by chunk id on
open) without embedding anything again. Chunk ids come from AUTOINCREMENT and are never reused, so an id
that a stale index file still holds can only mean "deleted since". Every write is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def connect(db_path: Path) -> sqlite3.Connection:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process never corrupts or half-commits
    con.execute("PRAGMA foreign_keys=ON")
    con.executescript(SCHEMA)
    return con


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def get_collection(con: sqlite3.Connection, name: str) -> CollectionRow | None:
    row = con.execute("SELECT name, embedder_id, embedder_spec, dim, normalized, metric, kind, chunk_size, "
                      "chunk_overlap, generation, created_at, updated_at FROM collections WHERE name = ?",
                      (name,)).fetchone()
    if row is None:
        return None
    return CollectionRow(row[0], row[1], row[2], int(row[3]), bool(row[4]), row[5], row[6], int(row[7]), int(row[8]),
                         int(row[9]), float(row[10]), float(row[11]))


def list_collections(con: sqlite3.Connection) -> list[CollectionRow]:
    names = [r[0] for r in con.execute("SELECT name FROM collections ORDER BY name")]
    return [c for n in names if (c := get_collection(con, n))]


def insert_collection(con: sqlite3.Connection, row: CollectionRow) -> None:
    con.execute("INSERT INTO collections VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (row.name, row.embedder_id, row.embedder_spec, row.dim, int(row.normalized), row.metric, row.kind,
                 row.chunk_size, row.chunk_overlap, row.generation, row.created_at, row.updated_at))


def bump_generation(con: sqlite3.Connection, name: str) -> int:
    con.execute("UPDATE collections SET generation = generation + 1, updated_at = ? WHERE name = ?",
                (time.time(), name))
    return int(con.execute("SELECT generation FROM collections WHERE name = ?", (name,)).fetchone()[0])


def documents(con: sqlite3.Connection, collection: str) -> dict[str, DocumentRow]:
    rows = con.execute("SELECT id, source, title, kind, content_hash, size, pages, tags FROM documents "
                       "WHERE collection = ?", (collection,))
    return {r[1]: DocumentRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(json.loads(r[7]))) for r in rows}


def counts(con: sqlite3.Connection, collection: str) -> tuple[int, int]:
    docs = con.execute("SELECT count(*) FROM documents WHERE collection = ?", (collection,)).fetchone()[0]
    chunks = con.execute("SELECT count(*) FROM chunks JOIN documents d ON d.id = chunks.document_id "
                         "WHERE d.collection = ?", (collection,)).fetchone()[0]
    return int(docs), int(chunks)


def chunk_ids(con: sqlite3.Connection, collection: str, document_ids: Sequence[int] | None = None) -> np.ndarray:
    sql = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.collection = ?"
    args: list[Any] = [collection]
    if document_ids is not None:
        sql += f" AND d.id IN ({','.join('?' * len(document_ids))})"
        args += list(document_ids)
    return np.fromiter((r[0] for r in con.execute(sql, args)), np.int64)


def filtered_chunk_ids(con: sqlite3.Connection, collection: str, source: str | None, tag: str | None) -> np.ndarray:
    """Chunk ids of documents whose source matches the glob `source` (`*` wildcards) and that carry `tag`."""
    sql = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.collection = ?"
    args: list[Any] = [collection]
    if source:
        sql += " AND (d.source GLOB ? OR d.source GLOB ?)"
        args += [source, f"*/{source}" if not source.startswith(("/", "*")) else source]
    if tag:
        sql += " AND EXISTS (SELECT 1 FROM json_each(d.tags) WHERE json_each.value = ?)"
        args.append(tag)
    return np.fromiter((r[0] for r in con.execute(sql, args)), np.int64)


def iter_vectors(con: sqlite3.Connection, collection: str, dim: int, table: str = "chunks",
                 batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of every chunk, in batches; `table="shadow_vectors"` reads a re-embed in progress."""
    if table == "chunks":
        sql = ("SELECT c.id, c.vector FROM chunks c JOIN documents d ON d.id = c.document_id "
               "WHERE d.collection = ? ORDER BY c.id")
    else:
        sql = "SELECT chunk_id, vector FROM shadow_vectors WHERE collection = ? ORDER BY chunk_id"
    cur = con.execute(sql, (collection,))
    while rows := cur.fetchmany(batch):
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
        yield ids, vectors


def chunk_texts(con: sqlite3.Connection, ids: Sequence[int]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    ids = [int(i) for i in ids]
    for i in range(0, len(ids), 900):
        part = ids[i:i + 900]
        out += con.execute(f"SELECT id, text FROM chunks WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
    return out


def all_chunk_texts(con: sqlite3.Connection, collection: str) -> Iterator[tuple[int, str]]:
    yield from con.execute("SELECT c.id, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
                           "WHERE d.collection = ? ORDER BY c.id", (collection,))


def get_chunks(con: sqlite3.Connection, ids: Sequence[int]) -> dict[int, ChunkRow]:
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


def next_chunk_id(con: sqlite3.Connection) -> int:
    row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
    return (int(row[0]) if row else 0) + 1


def insert_document(con: sqlite3.Connection, collection: str, source: str, title: str, kind: str, content_hash: str,
                    size: int, pages: int | None, tags: Sequence[str], chunks: Sequence[NewChunk]) -> list[int]:
    """Insert a document and its chunks (inside the caller's transaction); returns the new chunk ids."""
    cur = con.execute("INSERT INTO documents (collection, source, title, kind, content_hash, size, pages, tags, "
                      "ingested_at) VALUES (?,?,?,?,?,?,?,?,?)",
                      (collection, source, title, kind, content_hash, size, pages, json.dumps(list(tags)),
                       time.time()))
    doc_id = cur.lastrowid
    first = next_chunk_id(con)
    ids = list(range(first, first + len(chunks)))
    con.executemany("INSERT INTO chunks (id, document_id, ord, text, char_start, char_end, tokens, page, headings, "
                    "vector) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(i, doc_id, c.ord, c.text, c.start, c.end, c.tokens, c.page, json.dumps(list(c.headings)),
                      np.ascontiguousarray(c.vector, np.float32).tobytes()) for i, c in zip(ids, chunks, strict=True)])
    return ids


def delete_documents(con: sqlite3.Connection, document_ids: Sequence[int]) -> None:
    for i in range(0, len(document_ids), 900):
        part = list(document_ids[i:i + 900])
        con.execute(f"DELETE FROM documents WHERE id IN ({','.join('?' * len(part))})", part)


def vectors_for(con: sqlite3.Connection, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
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


def set_tags(con: sqlite3.Connection, document_id: int, tags: Sequence[str]) -> None:
    con.execute("UPDATE documents SET tags = ? WHERE id = ?", (json.dumps(list(tags)), document_id))
