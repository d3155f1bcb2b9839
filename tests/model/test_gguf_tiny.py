"""Our GGUF loader on tiny files with every supported tensor type, against `transformers`' GGUF loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize

from ember.model.errors import UnsupportedModelError, WeightsError
from ember.model.loader import load
from ember.model.weights.dequant import dequantize

KINDS = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.IQ4_NL, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
BLOCK = {Q.Q8_0: (32, 34), Q.Q4_0: (32, 18), Q.Q4_1: (32, 20), Q.Q5_0: (32, 22), Q.Q5_1: (32, 24),
         Q.IQ4_NL: (32, 18), Q.Q2_K: (256, 84), Q.Q3_K: (256, 110), Q.Q4_K: (256, 144), Q.Q5_K: (256, 176),
         Q.Q6_K: (256, 210)}
SCALE_OFFSETS = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.IQ4_NL: [0],
                 Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}


@pytest.mark.parametrize("qtype", KINDS, ids=lambda q: q.name)
def test_dequantize_matches_ggml_reference(qtype: Q) -> None:
    """Random blocks (finite fp16 scales) decode exactly as gguf-py's port of ggml-quants.c does."""
    rng = np.random.default_rng(int(qtype))
    elems, nbytes = BLOCK[qtype]
    raw = rng.integers(0, 256, size=(8, 4 * nbytes), dtype=np.uint8)
    blocks = raw.reshape(-1, nbytes)
    for off in SCALE_OFFSETS[qtype]:
        blocks[:, off:off + 2] = rng.uniform(-0.1, 0.1, (len(blocks), 1)).astype(np.float16).view(np.uint8)
    expected = gguf_dequantize(raw, qtype)
    ours = dequantize(torch.from_numpy(raw), qtype.name, expected.shape).numpy()
    assert ours.shape == (8, 4 * elems)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("qtype", KINDS, ids=lambda q: q.name)
def test_dequantize_matches_reference_on_any_bytes(qtype: Q) -> None:
    """Even arbitrary bytes (inf/nan fp16 scales included) decode bit for bit like the reference."""
    _, nbytes = BLOCK[qtype]
    raw = np.random.default_rng(100 + int(qtype)).integers(0, 256, size=(4, 16 * nbytes), dtype=np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = gguf_dequantize(raw, qtype)
    ours = dequantize(torch.from_numpy(raw), qtype.name, expected.shape).numpy()
    np.testing.assert_array_equal(ours, expected)  # NaNs compare equal position by position


def test_tiny_gguf_matches_transformers(write_tiny_gguf) -> None:
    transformers = pytest.importorskip("transformers")
    path: Path = write_tiny_gguf()
    ours = load(path, dtype="float32")
    ref = transformers.LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                        dtype=torch.float32).eval()
    ids = torch.randint(0, ours.model.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours.model(ids) - ref(ids).logits).abs().max().item()
    assert diff < 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in ["the", " the then", "héllo\n\n  x", "<|endoftext|>he"]:
        assert ours.tokenizer.encode(text) == tok(text)["input_ids"], text


def test_truncated_gguf_is_a_clear_error(write_tiny_gguf) -> None:
    path = write_tiny_gguf()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as e:
        load(path)
    assert str(path) in str(e.value) and ("truncated" in str(e.value) or "bytes" in str(e.value))


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"\x00PK garbage" * 100)
    with pytest.raises(WeightsError, match="not a GGUF file"):
        load(path)


def test_corrupt_header(write_tiny_gguf) -> None:
    path = write_tiny_gguf()
    data = bytearray(path.read_bytes())
    data[8:24] = b"\xff" * 16  # tensor and kv counts
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=str(path)):
        load(path)


def test_unknown_architecture(write_tiny_gguf) -> None:
    with pytest.raises(UnsupportedModelError, match="architecture 'gpt-neox'"):
        load(write_tiny_gguf(arch="gpt-neox"))


def test_missing_tensor(write_tiny_gguf) -> None:
    with pytest.raises(WeightsError, match=r"missing tensor.*layers\.1\.self_attn\.v_proj"):
        load(write_tiny_gguf(drop="blk.1.attn_v.weight"))


@pytest.mark.parametrize("tensor", ["blk.0.attn_norm.weight", "blk.1.ffn_down.weight"])
def test_wrong_shape(write_tiny_gguf, tensor: str) -> None:
    path = write_tiny_gguf(bad_shape=tensor)
    with pytest.raises(WeightsError) as e:
        load(path)
    assert str(path) in str(e.value) and "shape" in str(e.value)
