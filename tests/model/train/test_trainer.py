"""The training loop: nano overfits a tiny corpus; a resumed run continues bit-for-bit; schedule and groups."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ember.model.config import PRESETS, LlamaConfig
from ember.model.errors import ConfigError
from ember.model.tokenizer import Tokenizer
from ember.model.train.config import TrainConfig
from ember.model.train.init import new_model
from ember.model.train.optim import lr_factor, param_groups
from ember.model.train.packing import PackedDataset, pack_corpus
from ember.model.train.trainer import train


@pytest.fixture()
def packed(bpe: Tokenizer, paragraphs: list[str], tmp_path: Path) -> Path:
    pack_corpus(iter(paragraphs), bpe, tmp_path / "data", val_fraction=0.1)
    return tmp_path / "data"


def test_nano_overfits_a_tiny_corpus(bpe: Tokenizer, paragraphs: list[str], tmp_path: Path) -> None:
    pack_corpus(iter(paragraphs[:12]), bpe, tmp_path / "data", val_fraction=0.2)
    config = dataclasses.replace(PRESETS["nano"], vocab_size=bpe.vocab_size, num_hidden_layers=4)
    data = PackedDataset(tmp_path / "data" / "train.bin", seq_len=64, batch_size=2, seed=0, shuffle=False)
    data.num_sequences = 2  # the same two sequences every step: memorise them
    cfg = TrainConfig(seq_len=64, batch_size=2, max_steps=40, lr=3e-3, min_lr=3e-4, warmup_steps=4,
                      weight_decay=0.0)
    result = train(new_model(config, seed=0), data, cfg, tmp_path / "run")
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert first > 5.5  # about ln(512) = 6.2 at initialisation
    assert last < 0.5, f"loss {first:.2f} -> {last:.2f}"


def test_resume_gives_bit_identical_next_steps(tiny: LlamaConfig, packed: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(seq_len=32, batch_size=2, grad_accum=2, max_steps=4, lr=1e-2, warmup_steps=1,
                      save_every=2, eval_every=2, eval_batches=1)
    data = PackedDataset(packed / "train.bin", 32, 2, seed=3)
    val = PackedDataset(packed / "val.bin", 32, 2, shuffle=False)
    full = train(new_model(tiny, seed=1), data, cfg, tmp_path / "a", val=val)
    # a run that stopped after its step-2 checkpoint ...
    train(new_model(tiny, seed=1), data, dataclasses.replace(cfg, save_every=0), tmp_path / "b", val=val, until=2)
    torch.manual_seed(12345)  # ... in a process whose RNG has moved on, with a differently initialised model
    resumed = train(new_model(tiny, seed=99), data, cfg, tmp_path / "b", val=val, resume=True)
    losses = [(r["step"], r.get("loss"), r.get("val_loss")) for r in full.history]
    assert [(r["step"], r.get("loss"), r.get("val_loss")) for r in resumed.history] == losses  # exact equality


def test_resume_refuses_a_different_data_order(tiny: LlamaConfig, packed: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(seq_len=32, batch_size=2, max_steps=1, warmup_steps=0)
    data = PackedDataset(packed / "train.bin", 32, 2)
    train(new_model(tiny), data, cfg, tmp_path)
    with pytest.raises(ConfigError, match="batch_size"):
        train(new_model(tiny), PackedDataset(packed / "train.bin", 32, 4),
              dataclasses.replace(cfg, batch_size=4, max_steps=2), tmp_path, resume=True)


def test_warmup_then_cosine() -> None:
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    factors = [lr_factor(s, cfg) for s in range(101)]
    assert factors[:10] == sorted(factors[:10]) and factors[9] < 1
    assert factors[10] == pytest.approx(1.0) and factors[100] == pytest.approx(0.1)
    assert factors[10:] == sorted(factors[10:], reverse=True)


def test_weight_decay_skips_norms_and_embeddings(tiny: LlamaConfig) -> None:
    model = new_model(tiny)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("proj" in names[id(p)] for p in decay["params"])
    assert {names[id(p)].split(".")[-2] for p in no_decay["params"]} >= {"embed_tokens", "norm"}


def test_train_config_validates() -> None:
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig(max_steps=10, warmup_steps=20)
    with pytest.raises(ConfigError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_the_loss_on_labelled_columns_equals_the_full_loss(tiny: LlamaConfig) -> None:
    """`model_loss` runs the vocabulary head only where a label is; the loss is the full-logits one."""
    from ember.model.train.sft_data import IGNORE
    from ember.model.train.trainer import loss_fn, model_loss

    model = new_model(tiny, seed=3).eval()
    x = torch.randint(0, tiny.vocab_size, (2, 12))
    y = torch.full((2, 12), IGNORE)
    y[0, 7:10] = x[0, 8:11]
    y[1, 9:11] = x[1, 10:12]
    with torch.no_grad():
        torch.testing.assert_close(model_loss(model, x, y), loss_fn(model(x), y))
        dense = x.roll(-1, 1)
        torch.testing.assert_close(model_loss(model, x, dense), loss_fn(model(x), dense))


def test_autocast_auto_means_bf16_where_the_hardware_has_it() -> None:
    from ember.model.train.config import cpu_has_bf16_matmul

    assert TrainConfig(device="cuda").use_bf16 and not TrainConfig(autocast="none", device="cuda").use_bf16
    assert TrainConfig(device="cpu").use_bf16 == cpu_has_bf16_matmul()
    assert TrainConfig(autocast="bf16").use_bf16 and not TrainConfig(autocast="none").use_bf16
