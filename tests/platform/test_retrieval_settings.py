"""The `[retrieval]` section of ember.toml and its EMBER_RETRIEVAL__* variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ember.model.errors import ConfigError
from ember.platform.settings import load_settings


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("EMBER_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


def test_defaults_follow_the_design() -> None:
    r = load_settings().retrieval
    assert (r.embedder, r.chunk_size, r.chunk_overlap, r.mode, r.k, r.index, r.metric) == (
        "all-MiniLM-L6-v2", 256, 32, "hybrid", 5, "auto", "cosine")
    s = load_settings()
    assert s.db_path == Path(".ember/ember.db") and s.collections_dir == Path(".ember/collections")


def test_toml_section_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ember.toml").write_text('[retrieval]\nk = 8\nmode = "bm25"\nchunk_size = 128\n')
    r = load_settings().retrieval
    assert (r.k, r.mode, r.chunk_size, r.chunk_overlap) == (8, "bm25", 128, 32)
    monkeypatch.setenv("EMBER_RETRIEVAL__K", "3")
    assert load_settings().retrieval.k == 3 and load_settings().retrieval.mode == "bm25"


@pytest.mark.parametrize("toml,needles", [
    ('[retrieval]\nmode = "sparse"\n', ["retrieval.mode='sparse'", "'dense', 'bm25' or 'hybrid'"]),
    ("[retrieval]\nchunk_size = 64\nchunk_overlap = 64\n", ["chunk_overlap (64) must be smaller than chunk_size (64)"]),
    ("[retrieval]\ntop_k = 3\n", ["retrieval.top_k: unknown setting", "allowed: embedder, embedder_api_key"]),
    ("[retrieval]\nk = 0\n", ["retrieval.k=0", "greater than or equal to 1"]),
])
def test_invalid_retrieval_settings(tmp_path: Path, toml: str, needles: list[str]) -> None:
    (tmp_path / "ember.toml").write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_settings()
    for needle in needles:
        assert needle in str(e.value)
