"""`ember chat --collection NAME`: answers stream from the documents and end with their citations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ember.platform.cli.app import app

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


def test_chat_with_a_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_folder: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMBER_ENGINE__KV_CACHE_MB", "128")
    monkeypatch.setenv("EMBER_ENGINE__MAX_MODEL_LEN", "2048")
    shutil.copytree(smollm2_folder, tmp_path / "data" / "models" / "smollm2")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(REPO / "docs"), "--collection", "ember-docs"]).exit_code == 0
    r = runner.invoke(app, ["chat", "--collection", "ember-docs", "--max-tokens", "12"],
                      input="How do I create an API key?\nWhat is the capital of Mongolia in 1200?\n/exit\n")
    assert r.exit_code == 0, r.output
    assert "collection ember-docs" in r.output
    assert "[1] " in r.output and "server.md · The Ember server › API keys (chars" in r.output
    assert "(nothing relevant in the collection)" in r.output and "The documents do not say." in r.output
    missing = runner.invoke(app, ["chat", "--collection", "nope"], input="/exit\n")
    assert missing.exit_code != 0 and "no collection named 'nope'" in str(missing.exception or missing.output)
