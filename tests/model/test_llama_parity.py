"""Our Llama against `transformers.LlamaForCausalLM` on the same random weights, tiny configs, fp32."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers.models import WordLevel

from ember.model.config import LlamaConfig, RopeScaling
from ember.model.engine.llm_engine import EngineConfig, LLMEngine
from ember.model.fuse import fuse_projections
from ember.model.llama import Llama
from ember.model.loader import build_model
from ember.model.sampling_params import SamplingParams
from ember.model.tokenizer import Tokenizer

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


def pair(config: LlamaConfig) -> tuple[Any, Llama]:
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


@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused"])
@pytest.mark.parametrize("case", ["mha-untied", "gqa-tied", "mqa-untied", "gqa-llama3-rope", "biases-headdim"])
def test_paged_engine_greedy_matches_transformers(case: str, fused: bool) -> None:
    """Prefill and decode through the paged KV cache (blocks of 4) agree with HF's own generate,
    with separate or fused (QKV, gate/up) projections."""
    ref, ours = pair(tiny(**CASES[case]))
    if fused:
        fuse_projections(ours)
    prompts = [torch.randint(0, 160, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (5, 23, 40)]
    tok = Tokenizer(Backend(WordLevel({str(i): i for i in range(160)}, unk_token="0")))
    engine = LLMEngine(ours, tok, EngineConfig(kv_cache_bytes=1 << 20, block_size=4))
    got = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    ref.generation_config.eos_token_id = None
    for p, g in zip(prompts, got, strict=True):
        x = torch.tensor([p])
        expected = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False)
        assert g.token_ids == expected[0, len(p):].tolist()


def test_parameter_count_matches() -> None:
    for case in CASES:
        config = tiny(**CASES[case])
        ref, _ = pair(config)
        if config.attention_bias or config.mlp_bias:
            continue  # our count is of weights only
        assert config.num_parameters() == sum(p.numel() for p in ref.parameters()), case
