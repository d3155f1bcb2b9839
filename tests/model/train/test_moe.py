"""Mixtral-style sparse MoE: routing, the load-balancing loss, training, and export as MixtralForCausalLM."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ember.model.config import LlamaConfig
from ember.model.errors import ConfigError
from ember.model.loader import export_hf, load
from ember.model.moe import SparseMoE, load_balancing_loss
from ember.model.tokenizer import Tokenizer
from ember.model.train.config import TrainConfig
from ember.model.train.init import new_model
from ember.model.train.sft_data import SFTDataset
from ember.model.train.trainer import train

CONV = [{"role": "user", "content": "Where is Normandy?"}, {"role": "assistant", "content": "In France."}]


@pytest.fixture()
def moe(tiny: LlamaConfig) -> LlamaConfig:
    return dataclasses.replace(tiny, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False)


def test_each_token_uses_its_top_k_experts(moe: LlamaConfig) -> None:
    torch.manual_seed(0)
    block = SparseMoE(moe)
    x = torch.randn(2, 5, moe.hidden_size)
    out = block(x)
    h = x.reshape(-1, moe.hidden_size)
    probs = torch.softmax(block.gate(h), -1)
    expected = torch.zeros_like(h)
    for n in range(h.shape[0]):  # the definition, token by token
        w, idx = probs[n].topk(2)
        for weight, e in zip(w / w.sum(), idx, strict=True):
            expected[n] += weight * block.experts[int(e)](h[n])
    torch.testing.assert_close(out.reshape(-1, moe.hidden_size), expected, atol=1e-6, rtol=1e-5)


def test_load_balancing_loss_matches_transformers(moe: LlamaConfig) -> None:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    logits = torch.randn(12, 4)
    probs = torch.softmax(logits, -1)
    ours = load_balancing_loss(probs, probs.topk(2, -1).indices, 4)
    torch.testing.assert_close(ours, load_balancing_loss_func((logits,), 4, 2))
    uniform = torch.full((8, 4), 0.25)
    balanced = torch.tensor([[0, 1], [2, 3]] * 4)
    assert load_balancing_loss(uniform, balanced, 4).item() == pytest.approx(2.0)  # the minimum: k


def test_moe_trains_and_exports_as_mixtral(moe: LlamaConfig, bpe: Tokenizer, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    assert moe.num_parameters(active=True) < moe.num_parameters()
    model = new_model(moe, seed=0)
    assert moe.num_parameters() == sum(p.numel() for p in model.parameters())
    data = SFTDataset.from_conversations(bpe, [CONV], batch_size=1, max_len=64)
    result = train(model, data, TrainConfig(seq_len=64, batch_size=1, max_steps=8, lr=1e-2, warmup_steps=0),
                   tmp_path / "run")
    steps = [r for r in result.history if "loss" in r]
    assert steps[-1]["loss"] < steps[0]["loss"] and all(r["aux_loss"] >= 2 - 1e-4 for r in steps)
    export_hf(model, bpe, tmp_path / "hf", dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(hf).__name__ == "MixtralForCausalLM"
    x = torch.tensor([bpe.encode("The Normans gave their name to Normandy.")])
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(hf(x).logits, ours, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(load(tmp_path / "hf", dtype="float32").model(x), ours)  # and loads back


def test_bad_moe_config_is_refused(tiny: LlamaConfig) -> None:
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        dataclasses.replace(tiny, num_local_experts=2, num_experts_per_tok=3)
