"""Int8 weight-only quantization: close to full precision, measured on real text with the real model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ember.model.engine.llm_engine import EngineConfig, LLMEngine
from ember.model.loader import load
from ember.model.quantize import Int8Linear, perplexity, quantize_int8, weight_bytes
from ember.model.sampling_params import SamplingParams

FIXED_TEXT = Path(__file__).resolve().parents[3] / "shared/datasets/documents/fastapi-docs/docs/en/docs/async.md"


def test_int8_linear_is_close() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(256, 96, bias=True)
    x = torch.randn(5, 256)
    q = Int8Linear(linear)
    assert q.weight.dtype == torch.int8
    err = (q(x) - linear(x)).abs().max() / linear(x).abs().max()
    assert err < 0.02


def test_smollm2_int8_perplexity_and_answer(smollm2_folder: Path) -> None:
    lm = load(smollm2_folder, dtype="float32")
    ids = lm.tokenizer.encode(FIXED_TEXT.read_text())[:1024]
    full, full_bytes = perplexity(lm.model, ids), weight_bytes(lm.model)
    quantize_int8(lm.model)
    assert not any(isinstance(m, nn.Linear) for m in lm.model.modules())
    assert weight_bytes(lm.model) < full_bytes / 3.5
    assert abs(perplexity(lm.model, ids) / full - 1) < 0.02  # within 2% of fp32
    engine = LLMEngine(lm.model, lm.tokenizer, EngineConfig(kv_cache_bytes=64 << 20))
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    [out] = engine.generate([lm.tokenizer.encode(prompt)], SamplingParams(temperature=0, max_tokens=16))
    assert "Paris" in out.text
