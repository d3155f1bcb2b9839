"""Issue 19: the storage seam's two real databases, SQLite and PostgreSQL, behave alike for collections.

Two `Collection`s over one database but separate data folders stand for two servers: each keeps its own FAISS
and BM25 files as a cache; a document written through one is found through the other after `refresh()`,
which catches up by the collection's generation (its change sequence), and deletes are caught up too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ember.retrieval import sql, store
from ember.retrieval.collection import Collection, CollectionConfig, PreparedDocument
from ember.retrieval.embedders import EmbedderInfo
from ember.retrieval.errors import CollectionExistsError, CollectionNotFoundError
from tests.pg import pg_cluster, pg_url  # noqa: F401 (fixtures)

DIM = 16
INFO = EmbedderInfo("hash-16", DIM, True)


def vector(text: str) -> np.ndarray:
    """A deterministic unit vector per text (no model: the seam is under test, not the embedder)."""
    v = np.frombuffer(hashlib.sha256(text.encode()).digest()[:DIM * 2], np.uint16).astype(np.float32) - 32768
    return v / np.linalg.norm(v)


def doc(source: str, *texts: str, replaces: int | None = None) -> PreparedDocument:
    chunks = [store.NewChunk(i, t, 0, len(t), len(t.split()), None, ("h",), vector(t)) for i, t in enumerate(texts)]
    return PreparedDocument.build(source, source, "text", " ".join(texts).encode(), chunks, replaces=replaces)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        yield request.getfixturevalue("pg_url")


def shared(database: str | None, tmp_path: Path) -> tuple[Path, Path]:
    """Two servers' data folders; with SQLite both must point at one file, so they share one folder's db."""
    a = tmp_path / "a"
    return a, (tmp_path / "b" if database else a)


def test_write_on_one_server_is_searchable_on_the_other(database: str | None, tmp_path: Path) -> None:
    dir_a, dir_b = shared(database, tmp_path)
    a = Collection.create(dir_a, "team", INFO, CollectionConfig(), database=database)
    with pytest.raises(CollectionExistsError):
        Collection.create(dir_b, "team", INFO, CollectionConfig(), database=database)
    b = Collection.open(dir_b, "team", database=database)
    try:
        with a.lock():
            a.apply([doc("one.md", "quokkas live on Rottnest Island", "kettles boil water")])
            a.save()
        b.refresh()
        assert b.search_dense(vector("kettles boil water"), 1)[0][0] in set(store.chunk_ids(b.con, "team"))
        hits = b.search_bm25("quokkas", 2)
        assert hits and b.chunks([hits[0][0]])[hits[0][0]].text.startswith("quokkas")
        # a second write through b, then a replacement and a delete through a: each side catches up
        with b.lock():
            b.apply([doc("two.md", "bridges span rivers")])
        first = a.documents()["one.md"].id
        with a.lock():
            a.apply([doc("one.md", "quokkas are marsupials", replaces=first)])
        b.refresh()
        alive = set(store.chunk_ids(b.con, "team").tolist())
        assert b.index is not None and set(b.index.ids().tolist()) == alive
        assert set(np.asarray(b.bm25.ids).tolist()) == alive if b.bm25 is not None else False
        assert b.search_bm25("kettles", 3) == []
        assert [b.chunks([i])[i].text for i, _ in b.search_bm25("marsupials", 1)] == ["quokkas are marsupials"]
        assert a.counts() == b.counts() == (2, 2)
    finally:
        a.close()
        b.close()
    Collection.delete(dir_a, "team", database=database)
    with pytest.raises(CollectionNotFoundError):
        Collection.open(dir_b, "team", database=database)


def test_a_failed_write_leaves_nothing(database: str | None, tmp_path: Path) -> None:
    col = Collection.create(tmp_path, "tx", INFO, CollectionConfig(), database=database)
    try:
        bad = doc("bad.md", "a", "b")
        broken = PreparedDocument(bad.source, bad.title, bad.kind, bad.content_hash, bad.size, bad.pages, bad.tags,
                                  [*bad.chunks, store.NewChunk(2, None, 0, 1, 1, None, (), vector("c"))])
        with col.lock(), pytest.raises(Exception):  # noqa: B017 (a NOT NULL violation, whichever engine)
            col.apply([doc("good.md", "kept?"), broken])
        assert col.counts() == (0, 0) and col.row.generation == 0
        assert store.get_collection(col.con, "tx").generation == 0
    finally:
        col.close()


def test_migrations_run_once_and_are_recorded(database: str | None, tmp_path: Path) -> None:
    target = database or str(tmp_path / "ember.db")
    for _ in range(2):
        con = store.connect(target)
        try:
            assert sql.migrate(con, "retrieval", store.MIGRATIONS) == len(store.MIGRATIONS[con.dialect])
            version = con.execute("SELECT version FROM ember_schema WHERE component = 'retrieval'").fetchone()[0]
            assert version == len(store.MIGRATIONS["sqlite"]) == len(store.MIGRATIONS["postgresql"])
        finally:
            con.close()


def test_filters_speak_both_dialects(database: str | None, tmp_path: Path) -> None:
    col = Collection.create(tmp_path, "f", INFO, CollectionConfig(), database=database)
    try:
        d = doc("notes/guide.md", "alpha")
        d = PreparedDocument(d.source, d.title, d.kind, d.content_hash, d.size, d.pages, ("howto",), d.chunks)
        with col.lock():
            col.apply([d, doc("notes/other.txt", "beta")])
        ids = col.allowed_ids(source="*.md")
        assert ids is not None and len(ids) == 1
        tagged = col.allowed_ids(tag="howto")
        assert tagged is not None and tagged.tolist() == ids.tolist()
        assert len(col.allowed_ids(source="guide.md")) == 1
    finally:
        col.close()


def test_a_dropped_postgresql_connection_is_replaced(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """A server restart (here: every connection of the database terminated) costs one retried statement."""
    import psycopg

    col = Collection.create(tmp_path, "r", INFO, CollectionConfig(), database=pg_url)
    try:
        with col.lock():
            col.apply([doc("a.md", "alpha")])
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert col.counts() == (1, 1)
        with col.lock():  # and a write after it
            col.apply([doc("b.md", "beta")])
        assert col.counts() == (2, 2)
    finally:
        col.close()


def test_an_unreachable_database_is_one_clear_error() -> None:
    pytest.importorskip("psycopg")
    from tests.net import free_port

    with pytest.raises(sql.DatabaseError, match=r"cannot connect to postgresql://ember:\*\*\*@127.0.0.1:\d+/x"):
        sql.connect(f"postgresql://ember:secret@127.0.0.1:{free_port()}/x")


def test_two_servers_writing_one_collection_at_once(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """Writers on two servers queue on the collection's row; each ends with every chunk of both in its cache."""
    import threading

    a = Collection.create(tmp_path / "a", "busy", INFO, CollectionConfig(), database=pg_url)
    b = Collection.open(tmp_path / "b", "busy", database=pg_url)
    errors: list[BaseException] = []

    def write(col: Collection, tag: str) -> None:
        try:
            with col.lock():
                for i in range(15):
                    col.apply([doc(f"{tag}-{i}.md", f"{tag} text {i}", f"{tag} more {i}")])
                col.save()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(c, t)) for c, t in ((a, "left"), (b, "right"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        alive = set(store.chunk_ids(a.con, "busy").tolist())
        assert len(alive) == 60 and a.counts() == (30, 60)
        for col in (a, b):
            col.refresh()
            assert col.index is not None and set(col.index.ids().tolist()) == alive
            assert col.row.generation == 30
        assert b.search_bm25("left text 3", 1) and a.search_bm25("right more 7", 1)
    finally:
        a.close()
        b.close()


def test_catch_up_reads_the_change_log_and_does_without_it(database: str | None, tmp_path: Path) -> None:
    dir_a, dir_b = shared(database, tmp_path)
    a = Collection.create(dir_a, "log", INFO, CollectionConfig(), database=database)
    b = Collection.open(dir_b, "log", database=database)
    try:
        b.refresh()
        for round_ in range(2):  # with the log, then with the log gone (pruned): the same result
            with a.lock():
                a.apply([doc(f"r{round_}-x.md", f"round {round_} xylophone")])
                old = a.documents()[f"r{round_}-x.md"].id
                a.apply([doc(f"r{round_}-x.md", f"round {round_} zither", replaces=old)])
            gen = a.row.generation
            log = store.changes_since(a.con, "log", gen - 2, gen)
            assert log is not None and len(log) == 2 and log[1][1].size == 1  # the second removed one chunk
            if round_ == 1:
                store.forget_changes(a.con, "log")
                assert store.changes_since(a.con, "log", gen - 2, gen) is None
            b.refresh()
            alive = set(store.chunk_ids(b.con, "log").tolist())
            assert b.index is not None and {i for i in b.index.ids().tolist() if i not in b.index.deleted} == alive
            assert all(i in alive for i, _ in b.search_bm25(f"round {round_} xylophone", 3))  # the replaced is gone
            assert next(b.chunks([i])[i].text for i, _ in b.search_bm25("zither", 1)).endswith("zither")
    finally:
        a.close()
        b.close()
