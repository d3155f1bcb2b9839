"""Issue 19: two `ember serve` processes, one PostgreSQL. A real cluster (tests/pg.py), two real servers on
different ports, each with its own data folder (its FAISS/BM25 cache) and the real SmolLM2 and MiniLM.

Upload through one and search and chat through the other within seconds; users, keys and sessions are shared;
`kill -9` of one server in the middle of an ingest leaves the database consistent (every document whole, with
all its chunks and vectors) and the other server serving.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.net import free_port
from tests.pg import pg_cluster, pg_url  # noqa: F401 (fixtures)
from tests.platform.test_cli import EMBER, run

from .conftest import DOCS, wait_job

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


@dataclass
class Serve:
    proc: subprocess.Popen[str]
    url: str
    log: Path

    def client(self, key: str, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


def env_for(database: str, data_dir: Path) -> dict[str, str]:
    return {"EMBER_DATABASE_URL": database, "EMBER_DATA_DIR": str(data_dir), "EMBER_ENGINE__KV_CACHE_MB": "128",
            "EMBER_SERVER__MAX_TOKENS": "8", "EMBER_THREADS": "1"}


def start(database: str, data_dir: Path, model: Path) -> Serve:
    port = free_port()
    log = data_dir.parent / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")} | env_for(database, data_dir)
    with open(log, "w") as out:
        proc = subprocess.Popen([EMBER, "serve", "--port", str(port), "--model", str(model)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True, cwd=data_dir.parent)
    return Serve(proc, f"http://127.0.0.1:{port}", log)


def wait_up(s: Serve, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert s.proc.poll() is None, s.log.read_text()
        try:
            if httpx.get(s.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"server did not start: {s.log.read_text()}")


def cli(database: str, data_dir: Path, *args: str) -> str:
    out = run(*args, cwd=data_dir.parent, env=env_for(database, data_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def new_key(output: str) -> str:
    found = re.search(r"^(ember-\S{40,})$", output, re.M)
    assert found, output
    return found.group(1)


@pytest.fixture
def two(request: pytest.FixtureRequest, tmp_path: Path, smollm2_folder: Path
        ) -> Iterator[tuple[Serve, Serve, dict[str, str], str]]:
    database: str = request.getfixturevalue("pg_url")
    a_dir, b_dir = tmp_path / "a" / "data", tmp_path / "b" / "data"
    a_dir.parent.mkdir()
    b_dir.parent.mkdir()
    keys = {"ed": new_key(cli(database, a_dir, "users", "create", "ed", "--role", "editor")),
            "vi": new_key(cli(database, b_dir, "users", "create", "vi", "--role", "viewer"))}
    servers = [start(database, a_dir, smollm2_folder), start(database, b_dir, smollm2_folder)]
    try:
        for s in servers:
            wait_up(s)
        yield servers[0], servers[1], keys, database
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGINT)
                try:
                    s.proc.wait(20)
                except subprocess.TimeoutExpired:
                    s.proc.kill()


def consistency(database: str) -> dict[str, Any]:
    """What the database holds, checked: every document has chunks 0..n-1 with a vector of 384 floats each."""
    import psycopg

    with psycopg.connect(database) as con:
        docs = con.execute("SELECT d.id, d.source, count(c.id), coalesce(max(c.ord), -1), "
                           "coalesce(min(length(c.vector)), 0), coalesce(max(length(c.vector)), 0) "
                           "FROM documents d LEFT JOIN chunks c ON c.document_id = d.id GROUP BY d.id").fetchall()
        orphans = con.execute("SELECT count(*) FROM chunks c WHERE NOT EXISTS "
                              "(SELECT 1 FROM documents d WHERE d.id = c.document_id)").fetchone()
        generation = con.execute("SELECT name, generation FROM collections").fetchall()
    for _id, source, n, top, shortest, longest in docs:
        assert n >= 1 and top == n - 1, (source, n, top)
        assert shortest == longest == 384 * 4, source
    assert orphans is not None and orphans[0] == 0
    return {"documents": len(docs), "chunks": sum(d[2] for d in docs), "collections": dict(generation)}


def test_upload_on_one_server_search_and_chat_on_the_other(two: tuple[Serve, Serve, dict[str, str], str]) -> None:
    a, b, keys, database = two
    files = [("file", (p.name, p.read_bytes(), "text/markdown")) for p in sorted(DOCS.glob("*.md"))[:3]]
    with a.client(keys["ed"]) as ca:
        r = ca.post("/v1/collections/team/files", files=files)
        assert r.status_code == 202, r.text
        job = wait_job(ca, "team", r.json(), timeout=300)
        assert job["status"] == "done", job
        ingested = time.time()
        session = ca.post("/v1/sessions", json={"title": "shared?", "collection": "team"}).json()
    with b.client(keys["ed"]) as cb:  # keys, users and sessions are the database's: server b knows them all
        assert cb.get("/v1/me").json()["name"] == "ed"
        assert [s["id"] for s in cb.get("/v1/sessions").json()["data"]] == [session["id"]]
        hits: list[dict[str, Any]] = []
        while not hits and time.time() < ingested + 10:
            hits = cb.post("/v1/collections/team/search", json={"query": "API keys", "k": 3}).json()["data"]
        assert hits, "a document ingested through server a was not searchable through server b within 10 s"
        seconds = time.time() - ingested
        answer = cb.post("/v1/chat/completions", json={
            "model": "ember-rag:team", "session_id": session["id"], "max_tokens": 8,
            "messages": [{"role": "user", "content": "How do I create an API key?"}]}).json()
        assert answer["ember"]["collection"] == "team" and answer["ember"]["session_id"] == session["id"], answer
    with a.client(keys["ed"]) as ca:  # the turn saved through b is in the session read through a
        turns = ca.get(f"/v1/sessions/{session['id']}").json()["messages"]
        assert [m["role"] for m in turns] == ["user", "assistant"] and "citations" in turns[1]
    with b.client(keys["vi"]) as cv:  # the viewer sees nothing until granted, then reads but cannot write
        assert cv.get("/v1/collections").json()["data"] == []
        assert cv.get(f"/v1/sessions/{session['id']}").status_code == 404
    cli(database, Path(str(a.log.parent)) / "data", "users", "grant", "vi", "team")
    with b.client(keys["vi"]) as cv:
        assert [c["name"] for c in cv.get("/v1/collections").json()["data"]] == ["team"]
        assert cv.post("/v1/collections/team/search", json={"query": "API keys"}).json()["data"]
        assert cv.post("/v1/collections/team/files", files=files[:1]).status_code == 403
    cli(database, Path(str(a.log.parent)) / "data", "keys", "revoke", "vi")  # revoked through the CLI: refused
    with a.client(keys["vi"]) as cv, b.client(keys["vi"]) as cv2:
        assert cv.get("/v1/me").status_code == 401 and cv2.get("/v1/me").status_code == 401
    print(f"\nsearchable through the other server {seconds:.2f} s after the ingest job finished")
    consistency(database)


def test_kill_9_mid_ingest_leaves_the_database_consistent(two: tuple[Serve, Serve, dict[str, str], str],
                                                         tmp_path: Path) -> None:
    import psycopg

    a, b, keys, database = two
    text = "\n\n".join(p.read_text() for p in sorted(DOCS.glob("*.md")))
    files = [("file", (f"part-{i:02d}.md", f"# Part {i}\n\n{text}\n".encode(), "text/markdown")) for i in range(20)]
    with a.client(keys["ed"]) as ca:
        r = ca.post("/v1/collections/big/files", files=files)
        assert r.status_code == 202 and r.json()["status"] in ("queued", "running"), r.text
        deadline = time.time() + 240
        while True:  # kill once some files are in and others not yet
            with psycopg.connect(database) as con:
                n = con.execute("SELECT count(*) FROM documents WHERE collection = 'big'").fetchone()
            if n is not None and n[0] >= 2:
                break
            assert time.time() < deadline, "the ingest did not start"
            time.sleep(0.05)
        a.proc.send_signal(signal.SIGKILL)  # at once: fewer than all 20 documents in proves it was mid-ingest
        a.proc.wait(10)
    state = consistency(database)
    assert 2 <= state["documents"] < 20, state  # killed mid-way: some documents, each of them whole
    with b.client(keys["ed"]) as cb:  # the other server goes on serving, and sees exactly what was committed
        assert cb.get("/health").status_code == 200
        listed = {c["name"]: c for c in cb.get("/v1/collections").json()["data"]}
        assert listed["big"]["documents"] == state["documents"] and listed["big"]["chunks"] == state["chunks"]
        hits = cb.post("/v1/collections/big/search", json={"query": "Part", "k": 5}).json()["data"]
        assert hits and all(h["source"].startswith("part-") or "/part-" in h["source"] for h in hits)
        r = cb.post("/v1/collections/big/files", files=files[19:])  # and writes to the same collection
        assert wait_job(cb, "big", r.json(), timeout=300)["status"] == "done"
    after = consistency(database)
    assert after["documents"] == state["documents"] + 1
