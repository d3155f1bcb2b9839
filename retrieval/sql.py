"""The storage seam: one small `Connection` protocol, two real databases behind it.

SQLite (the embedded default, `<data_dir>/ember.db`, WAL) and PostgreSQL (`database_url =
"postgresql://..."`, psycopg 3 with a connection pool). Callers write SQL with `?` placeholders and the
common subset both engines speak; where the dialects differ (ids from a sequence, globs, JSON) they branch
on `dialect`. Every multi-row write runs inside `transaction()`; a unique-key clash surfaces as this
module's `IntegrityError` whichever engine raised it.

Migrations: each component (`retrieval`, `server`) lists its schema steps per dialect; `migrate` applies
the ones a database has not seen yet, in order, each in its own transaction, under a lock so two servers
starting at once do not race (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: an advisory lock).
"""

from __future__ import annotations

import atexit
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from ember.model.errors import EmberError

PG_PREFIXES = ("postgresql://", "postgres://")


class IntegrityError(Exception):
    """A unique or foreign key was violated (sqlite3.IntegrityError or psycopg.IntegrityError)."""


class DatabaseError(EmberError):
    """The database cannot be reached or opened."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the stores use of a database connection."""

    dialect: str  # "sqlite" | "postgresql"

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def script(self, sql: str) -> None:
        """Several statements without parameters (a schema)."""
        ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def close(self) -> None: ...


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith(PG_PREFIXES)


def describe(url: str) -> str:
    """`url` without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


# SQLite ----------------------------------------------------------------------------------------------------
class SqliteConnection:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.raw = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process never half-commits
        self.raw.execute("PRAGMA foreign_keys=ON")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        try:
            return self.raw.execute(sql, tuple(args))
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self.raw.executemany(sql, rows)
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e

    def script(self, sql: str) -> None:
        self.raw.executescript(sql)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def close(self) -> None:
        self.raw.close()


# PostgreSQL ------------------------------------------------------------------------------------------------
_pools: dict[str, Any] = {}
_pools_lock = threading.Lock()
POOL_MAX = 32
CHECK_URL = "Check database_url (EMBER_DATABASE_URL) and that PostgreSQL is running."


def pool(url: str) -> Any:
    """The process's one connection pool for `url` (psycopg_pool.ConnectionPool), opened on first use."""
    with _pools_lock:
        found = _pools.get(url)
        if found is not None:
            return found
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise DatabaseError("PostgreSQL support is not installed",
                                hint="pip install 'ember[postgres]' (psycopg[binary] and psycopg-pool)") from None
        try:  # once directly: a wrong URL or a server that is down is one clear error, not a pool retrying
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DatabaseError(f"cannot connect to {describe(url)}: {reason}", hint=CHECK_URL) from None
        made = ConnectionPool(url, min_size=1, max_size=POOL_MAX, kwargs={"autocommit": True}, open=False,
                              name="ember", check=ConnectionPool.check_connection)  # none handed out dead
        try:
            made.open(wait=True, timeout=15)
        except Exception as e:
            made.close()
            raise DatabaseError(f"cannot connect to {describe(url)}: {e}", hint=CHECK_URL) from e
        if not _pools:
            atexit.register(close_pools)
        _pools[url] = made
        return made


def close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for p in pools:
        p.close()


def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """One connection held from the pool for this object's life (autocommit; `transaction()` for writes)."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.pool = pool(url)
        self.raw = self.pool.getconn()
        self.depth = 0  # open transactions

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        import psycopg

        try:
            return self.raw.execute(_placeholders(sql), tuple(args))
        except psycopg.IntegrityError as e:
            raise IntegrityError(str(e)) from e
        except psycopg.OperationalError:
            if self.depth or not self.raw.closed:  # inside a transaction, or the server said no: not ours to retry
                raise
            self.reconnect()  # the server restarted or dropped us: a fresh connection, the statement once more
            return self.raw.execute(_placeholders(sql), tuple(args))

    def reconnect(self) -> None:
        self.pool.putconn(self.raw)  # the pool discards a closed connection
        self.raw = self.pool.getconn()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        import psycopg

        try:
            with self.raw.cursor() as cur:
                cur.executemany(_placeholders(sql), [tuple(r) for r in rows])
        except psycopg.IntegrityError as e:
            raise IntegrityError(str(e)) from e

    def script(self, sql: str) -> None:
        self.raw.execute(sql)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.raw.closed and not self.depth:
            self.reconnect()
        self.depth += 1
        try:
            with self.raw.transaction():
                yield
        finally:
            self.depth -= 1

    def close(self) -> None:
        if self.raw is not None:
            self.pool.putconn(self.raw)
            self.raw = None


def connect(database: str | Path) -> Connection:
    """A connection to `database`: a postgresql:// URL, else the path of a SQLite file."""
    if isinstance(database, str) and is_postgres(database):
        return PgConnection(database)
    return SqliteConnection(Path(database))


# migrations ------------------------------------------------------------------------------------------------
Migrations = Sequence[str]  # step n (1-based) is the SQL script at index n-1


def migrate(con: Connection, component: str, steps: dict[str, Migrations]) -> int:
    """Apply the steps of `component` this database has not had yet; returns its schema version."""
    todo = steps[con.dialect]
    con.script("CREATE TABLE IF NOT EXISTS ember_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    row = con.execute("SELECT version FROM ember_schema WHERE component = ?", (component,)).fetchone()
    if row is not None and int(row[0]) >= len(todo):
        return int(row[0])
    with con.transaction():
        if con.dialect == "postgresql":  # held until commit: a second server starting waits here
            con.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"ember_schema:{component}",))
        row = con.execute("SELECT version FROM ember_schema WHERE component = ?", (component,)).fetchone()
        version = int(row[0]) if row is not None else 0
        for step in todo[version:]:
            for statement in (s.strip() for s in step.split(";")):
                if statement:
                    con.execute(statement)
        if row is None:
            con.execute("INSERT INTO ember_schema (component, version) VALUES (?, ?)", (component, len(todo)))
        else:
            con.execute("UPDATE ember_schema SET version = ? WHERE component = ?", (len(todo), component))
    return len(todo)
