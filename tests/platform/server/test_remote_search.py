"""`ember search` with `remote` set asks a running `ember serve` (whose embedder is loaded) instead of loading
one itself, and falls back to searching locally when that server cannot be reached (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ember.platform.cli.app import app as cli
from tests.net import free_port

from .conftest import ServerFactory, upload_docs

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


def test_search_through_a_running_server(make_server: ServerFactory, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()
    key = server.state.keys.create("cli")
    with server.client(key) as c:
        upload_docs(c)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "elsewhere"))  # nothing to search locally
    monkeypatch.setenv("EMBER_REMOTE", server.url)
    monkeypatch.setenv("EMBER_REMOTE_API_KEY", key)
    r = CliRunner().invoke(cli, ["search", "How do I create an API key?", "-c", "docs", "--json", "-k", "3"])
    assert r.exit_code == 0, r.output
    hits = [json.loads(line) for line in r.output.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3] and Path(hits[0]["source"]).name == "server.md"
    monkeypatch.setenv("EMBER_REMOTE_API_KEY", "wrong")
    r = CliRunner().invoke(cli, ["search", "API key", "-c", "docs"])
    assert r.exit_code == 1 and "HTTP 401" in str(r.exception)


def test_an_unreachable_server_falls_back_to_a_local_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMBER_REMOTE", f"http://127.0.0.1:{free_port()}")
    r = CliRunner().invoke(cli, ["search", "anything", "-c", "nope", "--mode", "bm25"])
    assert "not reachable" in r.output and "no collection named 'nope'" in str(r.exception)
