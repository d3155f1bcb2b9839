"""API keys: with a key configured, every route but /health (and the UI's static shell) refuses requests
with a missing, wrong or revoked key; keys are stored hashed; the CLI manages them."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ember.model.errors import ConfigError
from ember.platform.cli.app import app as cli
from ember.platform.server.app import api_routes
from ember.platform.server.run import check_bind

from .conftest import ServerFactory

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


def test_every_route_needs_a_valid_key(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server()
    with server.client() as open_client:  # no keys yet: open (and loopback only)
        assert open_client.get("/v1/models").status_code == 200
    key = server.state.keys.create("ci")
    revoked = server.state.keys.create("old")
    server.state.keys.revoke("old")
    routes = api_routes()
    paths = {p for _, p in routes}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/collections",
            "/v1/collections/{name}/files", "/v1/sessions", "/metrics"} <= paths
    for name, headers in [("missing", {}), ("wrong", {"Authorization": "Bearer ember-not-a-key"}),
                          ("revoked", {"Authorization": f"Bearer {revoked}"}), ("not bearer", {"Authorization": key})]:
        with server.client() as c:
            for method, path in routes:
                url = re.sub(r"\{[^}]+\}", "x", path)
                r = c.request(method, url, headers=headers, json={})
                assert r.status_code == 401, (name, method, path, r.status_code, r.text)
                assert r.json()["error"]["type"] == "authentication_error"
                assert r.headers["www-authenticate"] == "Bearer"
    with server.client(key) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/sessions").status_code == 200
        assert c.post("/v1/chat/completions", json={"model": "smollm2", "max_tokens": 2,
                                                    "messages": [{"role": "user", "content": "Hi"}]}).status_code == 200
    with server.client() as c:
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200
        assert c.get("/static/app.js").status_code == 200
    server.state.keys.revoke("ci")  # revoked while the server runs: refused at once
    with server.client(key) as c:
        assert c.get("/v1/models").status_code == 401
    # only hashes are stored
    con = sqlite3.connect(server.state.settings.db_path)
    stored = [r[0] for r in con.execute("SELECT hash FROM api_keys")]
    con.close()
    assert key not in stored and all(len(h) == 64 for h in stored)


def test_keys_cli_and_loopback_only_without_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    r = runner.invoke(cli, ["keys", "list"])
    assert r.exit_code == 0 and "No API keys" in r.output
    r = runner.invoke(cli, ["keys", "create", "laptop"])
    assert r.exit_code == 0 and re.search(r"^ember-\S{40,}$", r.output, re.M)
    r = runner.invoke(cli, ["keys", "list"])
    assert "laptop" in r.output and "active" in r.output
    assert runner.invoke(cli, ["keys", "revoke", "laptop"]).exit_code == 0
    assert "revoked" in runner.invoke(cli, ["keys", "list"]).output
    with pytest.raises(ConfigError, match="without API keys"):
        check_bind("0.0.0.0", has_keys=False)
    check_bind("127.0.0.1", has_keys=False)
    check_bind("0.0.0.0", has_keys=True)
