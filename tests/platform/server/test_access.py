"""Issue 19: access control, table-driven. For each role, every route of the app (enumerated from the app
itself, so a new route without a row here fails the test) and every MCP tool, allowed and refused.

Users: `boss` (admin), `ed` (editor, owner of collection `shared`), `vi` (viewer, granted read on `shared`) and
`out` (an editor with no grant). Refused means 403 when the caller may see the thing but not do it, and 404
when it may not even know it exists (an ungranted collection, another user's chat session). The server is
real (uvicorn on loopback, real SQLite, real MiniLM); the LLM is the scripted one.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ember.platform.server.app import api_routes
from ember.platform.server.run import build_state
from ember.platform.settings import Settings
from ember.retrieval.embedders import SentenceTransformerEmbedder
from tests.net import free_port
from tests.pg import pg_cluster  # noqa: F401 (fixture)
from tests.scripted import ScriptedBackend

from .conftest import LiveServer, wait_job

ROLES = ("boss", "ed", "vi", "out")
ALL = set(ROLES)
READERS = {"boss", "ed", "vi"}  # who may read `shared`
DOC = b"# Quokkas\n\nQuokkas are small marsupials that live on Rottnest Island near Perth.\n"


@dataclass
class Team:
    server: LiveServer
    keys: dict[str, str]
    session: str  # ed's chat session
    job: str      # the ingest job that filled `shared`

    def client(self, role: str) -> httpx.Client:
        return self.server.client(self.keys[role])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def team(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         minilm: SentenceTransformerEmbedder) -> Iterator[Team]:
    """The same team on each storage: SQLite in the data folder, or a fresh PostgreSQL database."""
    data = tmp_path_factory.mktemp("team") / "data"
    database = request.getfixturevalue("pg_cluster").database() if request.param == "postgresql" else None
    settings = Settings(data_dir=data, server={"max_tokens": 8}, database_url=database)
    st = build_state(settings, ScriptedBackend(answer=lambda prompt: "Rottnest Island [1]."), "scripted",
                     lambda spec: minilm)
    keys = {}
    for name, role in [("boss", "admin"), ("ed", "editor"), ("vi", "viewer"), ("out", "editor")]:
        st.users.create(name, role)
        keys[name] = st.keys.create(name, user=name)
    server = LiveServer(st)
    with server.client(keys["ed"]) as c:
        r = c.post("/v1/collections/shared/files", files=[("file", ("quokkas.md", DOC, "text/markdown"))])
        assert r.status_code == 202, r.text
        job = wait_job(c, "shared", r.json())
        assert job["status"] == "done", job
        session = c.post("/v1/sessions", json={"title": "ed's", "collection": "shared"}).raise_for_status().json()
    st.users.grant("shared", "vi", "read")
    for extra in ("gr1", "gr2"):  # grantees whose grants the owner and the admin take away in the table
        st.users.create(extra, "viewer")
        st.users.grant("shared", extra, "read")
    yield Team(server, keys, session["id"], job["id"])
    server.stop()


Request = tuple[str, dict[str, Any]]  # url, httpx keyword arguments
CHAT = {"model": "ember-rag:shared", "max_tokens": 4,
        "messages": [{"role": "user", "content": "Where do quokkas live?"}]}


def upload(role: str) -> Request:
    return "/v1/collections/shared/files", {"files": [("file", (f"{role}.md", DOC, "text/markdown"))]}


# (method, route) -> (the request for a role, the roles allowed, the refusal status for the others; None: any)
TABLE: dict[tuple[str, str], tuple[Callable[[str], Request], set[str], int | None]] = {
    ("GET", "/openapi.json"): (lambda r: ("/openapi.json", {}), ALL, None),
    ("GET", "/metrics"): (lambda r: ("/metrics", {}), ALL, None),
    ("GET", "/v1/me"): (lambda r: ("/v1/me", {}), ALL, None),
    ("GET", "/static/{name}"): (lambda r: ("/static/style.css", {}), ALL, None),  # the UI shell: no data
    ("GET", "/v1/models"): (lambda r: ("/v1/models", {}), ALL, None),
    ("GET", "/v1/models/{model:path}"): (lambda r: ("/v1/models/ember-rag:shared", {}), READERS, 404),
    ("POST", "/v1/chat/completions"): (lambda r: ("/v1/chat/completions", {"json": CHAT}), READERS, 404),
    ("POST", "/v1/completions"): (lambda r: ("/v1/completions", {"json": {"model": "scripted", "prompt": "Hi",
                                                                           "max_tokens": 2}}), ALL, None),
    ("POST", "/v1/embeddings"): (lambda r: ("/v1/embeddings", {"json": {"model": "all-MiniLM-L6-v2",
                                                                         "input": "x"}}), ALL, None),
    ("GET", "/v1/collections"): (lambda r: ("/v1/collections", {}), ALL, None),
    ("POST", "/v1/collections"): (lambda r: ("/v1/collections", {"json": {"name": f"new-{r}"}}),
                                  {"boss", "ed", "out"}, 403),
    ("GET", "/v1/collections/{name}"): (lambda r: ("/v1/collections/shared", {}), READERS, 404),
    # each deletes its own new collection; the refused try the shared one
    ("DELETE", "/v1/collections/{name}"): (
        lambda r: (f"/v1/collections/{'shared' if r in ('vi', 'out') else 'new-' + r}", {}), {"boss", "ed"}, None),
    ("POST", "/v1/collections/{name}/files"): (upload, {"boss", "ed"}, None),
    ("GET", "/v1/collections/{name}/jobs"): (lambda r: ("/v1/collections/shared/jobs", {}), READERS, 404),
    ("POST", "/v1/collections/{name}/search"): (lambda r: ("/v1/collections/shared/search",
                                                           {"json": {"query": "quokkas"}}), READERS, 404),
    ("GET", "/v1/collections/{name}/grants"): (lambda r: ("/v1/collections/shared/grants", {}), {"boss", "ed"},
                                               None),
    ("PUT", "/v1/collections/{name}/grants/{user}"): (
        lambda r: ("/v1/collections/shared/grants/gr1", {"json": {"access": "read"}}), {"boss", "ed"}, None),
    ("DELETE", "/v1/collections/{name}/grants/{user}"): (
        lambda r: (f"/v1/collections/shared/grants/{'gr2' if r == 'ed' else 'gr1'}", {}), {"boss", "ed"}, None),
    ("GET", "/v1/sessions"): (lambda r: ("/v1/sessions", {}), ALL, None),
    ("POST", "/v1/sessions"): (lambda r: ("/v1/sessions", {"json": {"title": r}}), ALL, None),
}
SESSION_ROUTES = {("GET", "/v1/sessions/{session_id}"), ("DELETE", "/v1/sessions/{session_id}")}
JOB_ROUTE = ("GET", "/v1/collections/{name}/jobs/{job_id}")


def test_every_route_has_a_row() -> None:
    """A route added to the app without deciding who may call it fails here."""
    assert set(api_routes()) == {*TABLE, *SESSION_ROUTES, JOB_ROUTE}, "add the new route to TABLE"


def test_each_role_allowed_and_refused_on_every_route(team: Team) -> None:
    seen: list[tuple[str, str, str, int]] = []
    for (method, _route), (make, allowed, refusal) in TABLE.items():
        # refused roles first (a refused delete must find its target still there), the owner last
        for role in sorted(ROLES, key=lambda r: (r in allowed, r == "ed")):
            url, kwargs = make(role)
            with team.client(role) as c:
                r = c.request(method, url, **kwargs)
            seen.append((role, method, url, r.status_code))
            if role in allowed:
                assert r.status_code < 300, (role, method, url, r.status_code, r.text)
            else:
                assert r.status_code in ((refusal,) if refusal else (403, 404)), (role, method, url, r.text)
                assert "(collections:" not in r.text, r.text  # a refusal never lists the collections there are
    refused = {(role, method, url) for role, method, url, status in seen if status >= 400}
    assert ("vi", "POST", "/v1/collections/shared/files") in refused  # a viewer never uploads
    assert ("vi", "DELETE", "/v1/collections/shared") in refused      # nor deletes
    assert {s for r, m, u, s in seen if r == "vi" and "/grants" in u} == {403}  # nor shares
    assert {s for r, m, u, s in seen if r == "out" and "/grants" in u} == {404}
    assert team.server.state.users.grants("shared") == {"ed": "owner", "vi": "read"}

    job = f"/v1/collections/shared/jobs/{team.job}"
    for role in ROLES:
        with team.client(role) as c:
            assert c.get(job).status_code == (200 if role in READERS else 404), role
    session = f"/v1/sessions/{team.session}"
    for role in ("boss", "vi", "out"):  # nobody sees another user's sessions, admins included
        with team.client(role) as c:
            assert c.get(session).status_code == 404, role
            assert c.delete(session).status_code == 404, role
            assert team.session not in c.get("/v1/sessions").text
            chat = c.post("/v1/chat/completions", json={**CHAT, "model": "scripted", "session_id": team.session})
            assert chat.status_code == 404, role
    with team.client("ed") as c:
        assert c.get(session).status_code == 200
        assert c.delete(session).status_code == 200


def test_listings_search_results_and_metrics_show_only_what_is_granted(team: Team) -> None:
    with team.client("boss") as c:
        c.post("/v1/collections", json={"name": "secret"}).raise_for_status()  # boss's, granted to nobody
    for role in ROLES:
        with team.client(role) as c:
            names = {x["name"] for x in c.get("/v1/collections").json()["data"]}
            models = {m["id"] for m in c.get("/v1/models").json()["data"]}
            me = c.get("/v1/me").json()
            metrics = c.get("/metrics").text
        assert me["name"] == role and me["team"] is True
        assert me["can_create_collections"] == (role != "vi")
        assert ("shared" in names) == (role in READERS) and ("ember-rag:shared" in models) == (role in READERS)
        assert ("secret" in names) == (role == "boss")
        assert "secret" not in metrics and "shared" not in metrics  # labels are route templates only
    with team.client("vi") as c:
        hits = c.post("/v1/collections/shared/search", json={"query": "Where do quokkas live?"}).json()["data"]
        assert hits and all(h["source"].endswith(".md") for h in hits)
        answer = c.post("/v1/chat/completions", json=CHAT).json()
        assert answer["citations"] and answer["ember"]["collection"] == "shared"
        missing = c.post("/v1/collections/secret/search", json={"query": "x"})
        assert missing.status_code == 404 and "secret" in missing.text and "shared" not in missing.text
    with team.client("out") as c:  # a not-found for an ungranted user does not list the collections there are
        r = c.post("/v1/collections/nope/search", json={"query": "x"})
        assert r.status_code == 404 and "shared" not in r.text and "secret" not in r.text


# MCP ------------------------------------------------------------------------------------------------------
MCP_TOOLS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "list_collections": ({}, ALL),
    "search_documents": ({"collection": "shared", "query": "quokkas", "k": 2}, READERS),
    "ask": ({"collection": "shared", "question": "Where do quokkas live?"}, READERS),
}


@pytest.fixture(scope="module")
def mcp_url(team: Team) -> Iterator[str]:
    from ember.agents.mcp_server import Library, build_server
    from ember.platform.auth import Gate
    from ember.platform.cli.mcp import http_app
    from ember.platform.server.users import McpPolicy

    st = team.server.state
    library = Library(st.wiring, st.settings.data_dir, policy=McpPolicy(st.users, st.keys),
                      database=st.settings.database_url)
    app = http_app(build_server(library), Gate(st.keys))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the MCP server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)


def test_each_role_on_every_mcp_tool_and_the_document_template(team: Team, mcp_url: str) -> None:
    import anyio
    import mcp
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    def text(result: Any) -> str:
        return str(result.content[0].text)

    async def as_role(role: str) -> None:
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {team.keys[role]}"}) as http, \
                mcp.Client(streamable_http_client(mcp_url, http_client=http)) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert tools == set(MCP_TOOLS), "add the new MCP tool to MCP_TOOLS"
            for name, (args, allowed) in MCP_TOOLS.items():
                result = await client.call_tool(name, args)
                if role in allowed:
                    assert not result.is_error, (role, name, text(result))
                else:
                    assert result.is_error and "no collection named 'shared'" in text(result), (role, name)
            listed = {c["name"] for c in json.loads(text(await client.call_tool("list_collections", {})))}
            assert ("shared" in listed) == (role in READERS) and ("secret" in listed) == (role == "boss")
            assert not (await client.list_resources()).resources  # a team server lists no documents
            hits = json.loads(text(await client.call_tool("search_documents", MCP_TOOLS["search_documents"][0]))) \
                if role in READERS else []
            uri = hits[0]["uri"] if hits else "ember://shared/1"
            if role in READERS:
                body = (await client.read_resource(uri)).contents[0]
                assert "Rottnest" in getattr(body, "text", "")
            else:
                with pytest.raises(Exception, match="no collection"):
                    await client.read_resource(uri)

    for role in ROLES:
        anyio.run(as_role, role)


def test_single_user_mode_is_unchanged(tmp_path: Path, minilm: SentenceTransformerEmbedder) -> None:
    st = build_state(Settings(data_dir=tmp_path / "data"), ScriptedBackend(["ok"]), "scripted", lambda s: minilm)
    server = LiveServer(st)
    try:
        with server.client() as c:  # no keys, no users: open on loopback, the one admin
            assert c.get("/v1/me").json() == {"object": "user", "name": None, "role": "admin",
                                              "can_create_collections": True, "team": False}
            assert c.post("/v1/collections", json={"name": "mine"}).status_code == 201
            s = c.post("/v1/sessions", json={"title": "t"}).json()
            assert [x["id"] for x in c.get("/v1/sessions").json()["data"]] == [s["id"]]
        key = st.keys.create("laptop")  # a key without a user, still before users: an admin key
        with server.client(key) as c:
            assert {x["name"] for x in c.get("/v1/collections").json()["data"]} == {"mine"}
            assert c.get(f"/v1/sessions/{s['id']}").status_code == 200
            assert c.delete("/v1/collections/mine").status_code == 200
    finally:
        server.stop()


def test_cli_users_and_grants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ember.platform.cli.app import app as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    assert "single-user" in runner.invoke(cli, ["users", "list"]).output
    r = runner.invoke(cli, ["users", "create", "ann", "--role", "editor"])
    assert r.exit_code == 0 and re.search(r"^ember-\S{40,}$", r.output, re.M), r.output
    assert "ann" in runner.invoke(cli, ["keys", "list"]).output
    r = runner.invoke(cli, ["users", "create", "bob", "--role", "boss"])
    assert r.exit_code != 0 and "invalid role" in str(r.exception)  # `ember` (main) prints EmberErrors cleanly
    r = runner.invoke(cli, ["users", "grant", "ann", "nothing-here"])
    assert r.exit_code != 0 and "no collection named" in str(r.exception)
    assert runner.invoke(cli, ["users", "role", "ann", "viewer"]).exit_code == 0
    assert "viewer" in runner.invoke(cli, ["users", "list"]).output
    assert runner.invoke(cli, ["users", "delete", "ann"]).exit_code == 0
    assert "ann" not in runner.invoke(cli, ["keys", "list"]).output
    for sub in ("create", "list", "role", "delete", "grant", "revoke", "grants"):
        assert runner.invoke(cli, ["users", sub, "--help"]).exit_code == 0


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_web_ui_shows_who_is_signed_in_and_only_what_they_may_use(team: Team) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            for role, uploads in [("vi", False), ("ed", True)]:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(team.server.url + "/")
                page.fill("#api-key", team.keys[role])
                page.evaluate("document.getElementById('key-box').hidden = false")
                page.click("#save-key")
                page.wait_for_selector("#whoami:not([hidden])", timeout=30_000)
                assert page.inner_text("#whoami") == f"Signed in as {role} ({'viewer' if role == 'vi' else 'editor'})"
                page.wait_for_selector("#collection option[value=shared]", state="attached", timeout=30_000)
                options = page.eval_on_selector_all("#collection option", "os => os.map(o => o.value)")
                assert "shared" in options and "secret" not in options
                assert page.is_hidden("#upload-box") is not uploads, role
                assert not errors, errors
                page.close()
        finally:
            browser.close()


def test_a_database_from_before_users_is_migrated_in_place(tmp_path: Path) -> None:
    """An ember.db made before issue 19 (no users, no schema table) opens with its keys and sessions intact."""
    import sqlite3

    from ember.platform.server.db import SCHEMA_V1, Database
    from ember.platform.server.keys import KeyStore, digest
    from ember.platform.server.sessions import SessionStore
    from ember.platform.server.users import UserStore

    path = tmp_path / "ember.db"
    con = sqlite3.connect(path)
    con.executescript(SCHEMA_V1)
    con.execute("INSERT INTO api_keys (name, prefix, hash, created_at) VALUES ('old', 'ember-abcd', ?, 0)",
                (digest("ember-old-secret"),))
    con.execute("INSERT INTO chat_sessions VALUES ('chat-1', 'before', NULL, 0, 0)")
    con.commit()
    con.close()
    for _ in range(2):  # and a second open changes nothing
        db = Database(path)
        try:
            keys, sessions, users = KeyStore(db), SessionStore(db), UserStore(db)
            assert keys.identify("ember-old-secret") == ("old", None)
            assert [s.id for s in sessions.all()] == ["chat-1"] and not users.team()
            assert db.read("SELECT version FROM ember_schema WHERE component = 'server'") == [(2,)]
        finally:
            db.close()
    db = Database(path)
    try:
        UserStore(db).create("ann", "viewer")
        KeyStore(db).create("ann-key", user="ann")
        assert [k.user for k in KeyStore(db).all()] == [None, "ann"]
        with pytest.raises(Exception, match="no user named 'bob'"):
            KeyStore(db).create("bob-key", user="bob")
        assert SessionStore(db).all("ann") == [] and [s.id for s in SessionStore(db).all(None)] == ["chat-1"]
    finally:
        db.close()
