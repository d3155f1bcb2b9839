from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ember.model.config import PRESETS, LlamaConfig, RopeScaling
from ember.model.errors import ConfigError, UnsupportedModelError, WeightsError


def test_roundtrip_through_hf_json(tmp_path: Path) -> None:
    config = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                         rope_scaling=RopeScaling("llama3", 32.0, 1.0, 4.0, 8192), tie_word_embeddings=True,
                         eos_token_id=[2, 3], attention_bias=True)
    config.save(tmp_path)
    assert LlamaConfig.load(tmp_path) == config


def test_transformers_reads_our_config(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = PRESETS["nano"]
    config.save(tmp_path)
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert (hf.num_key_value_heads, hf.hidden_size, hf.tie_word_embeddings) == (4, 256, True)
    back = LlamaConfig.from_hf(hf.to_dict())  # transformers 5 spelling (rope_parameters) reads back
    assert replace(back, extra={}) == config


@pytest.mark.parametrize("preset,low,high", [("nano", 8e6, 12e6), ("micro", 25e6, 35e6)])
def test_presets_sizes(preset: str, low: float, high: float) -> None:
    assert low < PRESETS[preset].num_parameters() < high


@pytest.mark.parametrize("kwargs,match", [
    (dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=4), "multiple of num_key_value_heads"),
    (dict(hidden_size=100, num_attention_heads=3), "not divisible"),
    (dict(vocab_size=0), "vocab_size=0"),
])
def test_invalid_configs(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LlamaConfig(**kwargs)


def test_not_llama(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedModelError, match="not a Llama"):
        LlamaConfig.load(tmp_path)


def test_broken_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        LlamaConfig.load(tmp_path)


def test_unknown_rope_type() -> None:
    with pytest.raises(UnsupportedModelError, match="yarn"):
        LlamaConfig.from_hf({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
