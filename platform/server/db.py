"""The server's own tables, next to retrieval's: users, API keys, collection grants and chat sessions.

In `<data_dir>/ember.db` (SQLite, WAL, so the CLI can write while a server reads, and a key revoked by the
CLI is refused at once), or in the PostgreSQL database of `database_url`, which several servers share. Both
through the storage seam of `ember.retrieval.sql`; the schema is migrated on open.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ember.retrieval import sql

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL,
    last_used_at REAL
);
CREATE TABLE IF NOT EXISTS chat_sessions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    collection TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    citations TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_session ON chat_messages(session_id, id)
"""
# users and roles; a key and a chat session belong to a user (NULL: made before users existed)
SQLITE_V2 = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created_at REAL NOT NULL
);
ALTER TABLE api_keys ADD COLUMN user_name TEXT REFERENCES users(name) ON DELETE CASCADE;
ALTER TABLE chat_sessions ADD COLUMN user_name TEXT;
CREATE INDEX IF NOT EXISTS chat_sessions_user ON chat_sessions(user_name, updated_at);
CREATE TABLE IF NOT EXISTS collection_access (
    collection TEXT NOT NULL,
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    access TEXT NOT NULL,
    PRIMARY KEY (collection, user_name)
)
"""
PG_V1 = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION,
    user_name TEXT REFERENCES users(name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS chat_sessions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    collection TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    user_name TEXT
);
CREATE INDEX IF NOT EXISTS chat_sessions_user ON chat_sessions(user_name, updated_at);
CREATE TABLE IF NOT EXISTS chat_messages (
    id BIGSERIAL PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    citations TEXT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_session ON chat_messages(session_id, id);
CREATE TABLE IF NOT EXISTS collection_access (
    collection TEXT NOT NULL,
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    access TEXT NOT NULL,
    PRIMARY KEY (collection, user_name)
)
"""
MIGRATIONS: dict[str, sql.Migrations] = {"sqlite": [SCHEMA_V1, SQLITE_V2], "postgresql": [PG_V1, ""]}


class Database:
    """One connection per store, shared by the server's threads under a lock."""

    def __init__(self, database: Path | str) -> None:
        """`database`: a postgresql:// URL, or the path of the SQLite file."""
        self.con = sql.connect(database)
        self.dialect = self.con.dialect
        try:
            sql.migrate(self.con, "server", MIGRATIONS)
        except BaseException:
            self.con.close()
            raise
        self.lock = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[sql.Connection]:
        """A transaction: every multi-row write is whole or not at all."""
        with self.lock, self.con.transaction():
            yield self.con

    def read(self, query: str, args: Sequence[Any] = ()) -> list[Any]:
        with self.lock:
            return self.con.execute(query, args).fetchall()

    def close(self) -> None:
        self.con.close()
