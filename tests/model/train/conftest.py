"""Shared fixtures: a small BPE trained on real SQuAD paragraphs, and tiny model configs sized to it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ember.model.config import PRESETS, LlamaConfig
from ember.model.tokenizer import Tokenizer
from ember.model.train.corpus import squad_paragraphs
from ember.model.train.tokenizer_train import train_tokenizer

ROOT = Path(__file__).resolve().parents[3]
SQUAD_DEV = ROOT.parent / "shared" / "datasets" / "squad" / "dev-v1.1.json"
SQUAD_TRAIN = ROOT.parent / "shared" / "datasets" / "squad" / "v2-train-source.json"


@pytest.fixture(scope="session")
def paragraphs() -> list[str]:
    if not SQUAD_DEV.is_file():
        pytest.skip(f"{SQUAD_DEV} is missing")
    return list(squad_paragraphs(SQUAD_DEV))[:200]


@pytest.fixture(scope="session")
def bpe(paragraphs: list[str]) -> Tokenizer:
    return train_tokenizer(iter(paragraphs), vocab_size=512)


@pytest.fixture()
def tiny(bpe: Tokenizer) -> LlamaConfig:
    """Smaller than nano: 2 layers, 64 wide (a few seconds of training on a CPU)."""
    return dataclasses.replace(PRESETS["tiny"], vocab_size=bpe.vocab_size, bos_token_id=bpe.bos_token_id,
                               eos_token_id=bpe.eos_token_id, pad_token_id=bpe.pad_token_id)
