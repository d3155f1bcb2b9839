"""Our Llama against `transformers.LlamaForCausalLM` on the same random weights, tiny configs, fp32."""

from __future__ import annotations

import pytest
import torch
from ember.model.config import LlamaConfig, RopeScaling
from ember.model.kv_cache import StaticKVCache
from ember.model.loader import build_model

transformers = pytest.importorskip("transformers")

CASES = {
    "mha-untied": dict(num_key_value_heads=4),
    "gqa-tied": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "mqa-untied": dict(num_key_value_heads=1),
    "gqa-llama3-rope": dict(num_key_value_heads=2, rope_theta=500000.0,
                            rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 64)),
    "mha-linear-rope": dict(num_key_value_heads=4, rope_scaling=RopeScaling("linear", 2.0)),
    "biases-headdim": dict(num_key_value_heads=2, attention_bias=True, mlp_bias=True, head_dim=32),
}


def tiny(**kw: object) -> LlamaConfig:
    base: dict = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=512)
    return LlamaConfig(**(base | kw))


def pair(config: LlamaConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config.to_hf())).eval()
    with torch.no_grad():  # HF zero-inits biases and ones-inits norms: randomise so they are tested
        for name, p in ref.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return ref, build_model(config, dict(ref.state_dict()), "random")


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(case: str) -> None:
    ref, ours = pair(tiny(**CASES[case]))
    ids = torch.randint(0, 160, (3, 300), generator=torch.Generator().manual_seed(1))  # > 64: llama3 bands matter
    with torch.no_grad():
        diff = (ours(ids) - ref(ids).logits).abs().max().item()
    assert diff < 1e-4, f"{case}: max |logit diff| {diff:.2e}"


@pytest.mark.parametrize("case", ["gqa-tied", "mqa-untied"])
def test_kv_cache_steps_equal_one_pass(case: str) -> None:
    ref, ours = pair(tiny(**CASES[case]))
    ids = torch.randint(0, 160, (2, 40), generator=torch.Generator().manual_seed(2))
    cache = StaticKVCache(ours.config, 2, 64, torch.float32, "cpu")
    with torch.no_grad():
        full = ref(ids).logits
        steps = [ours(ids[:, :17], cache=cache), ours(ids[:, 17:30], cache=cache)]
        steps += [ours(ids[:, t:t + 1], cache=cache) for t in range(30, 40)]
    assert cache.length == 40
    assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-4


def test_cache_overflow_is_refused() -> None:
    _, ours = pair(tiny())
    cache = StaticKVCache(ours.config, 1, 8, torch.float32, "cpu")
    with pytest.raises(ValueError, match="KV cache full"):
        ours(torch.zeros(1, 9, dtype=torch.long), cache=cache)


def test_parameter_count_matches() -> None:
    for case in CASES:
        config = tiny(**CASES[case])
        ref, _ = pair(config)
        if config.attention_bias or config.mlp_bias:
            continue  # our count is of weights only
        assert config.num_parameters() == sum(p.numel() for p in ref.parameters()), case
