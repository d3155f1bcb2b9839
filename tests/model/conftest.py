"""Tiny GGUF files written with the `gguf` package's own writer, for loader and bad-input tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import quantize

# A byte-level BPE vocabulary: the 256 byte symbols, two merges, and one control token.
BYTE_CHARS = [chr(c) for c in range(ord("!"), ord("~") + 1)] + [chr(c) for c in range(ord("¡"), ord("¬") + 1)] \
    + [chr(c) for c in range(ord("®"), ord("ÿ") + 1)]
_rest = [c for c in range(256) if chr(c) not in BYTE_CHARS]
BYTE_CHARS += [chr(256 + i) for i in range(len(_rest))]
TOKENS = [*BYTE_CHARS, "Ġt", "he", "<|endoftext|>"]
MERGES = ["Ġ t", "h e"]

TINY = dict(layers=2, hidden=64, heads=4, kv_heads=2, ffn=256, vocab=len(TOKENS))


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_kquant(rows: int, cols: int, qtype: Q, rng: np.random.Generator) -> np.ndarray:
    """Random K-quant blocks whose fp16 scales are small and finite (gguf-py cannot quantize K types)."""
    block_bytes = {Q.Q4_K: 144, Q.Q6_K: 210}[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // 256, block_bytes), dtype=np.uint8)
    scale = np.full(raw.shape[:2], 0.002, dtype=np.float16).view(np.uint8).reshape(*raw.shape[:2], 2)
    if qtype == Q.Q4_K:
        raw[..., 0:2] = scale  # d
        raw[..., 2:4] = scale  # dmin
    else:
        raw[..., 208:210] = scale
    return raw.reshape(rows, -1)


GGUFBuilder = Callable[..., Path]


@pytest.fixture
def write_tiny_gguf(tmp_path: Path) -> GGUFBuilder:
    """Write a tiny random Llama GGUF using every supported tensor type; returns its path.

    Keyword overrides: `arch`, `drop` (a tensor name to leave out), `bad_shape` (a tensor written with a
    wrong shape), `name`.
    """

    def build(name: str = "tiny.gguf", arch: str = "llama", drop: str | None = None,
              bad_shape: str | None = None, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        L, C, H, KV, F, V = (TINY[k] for k in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab"))
        hd = C // H
        path = tmp_path / name
        w = GGUFWriter(str(path), arch)
        w.add_block_count(L)
        w.add_context_length(256)
        w.add_embedding_length(C)
        w.add_feed_forward_length(F)
        w.add_head_count(H)
        w.add_head_count_kv(KV)
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(hd)
        w.add_vocab_size(V)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt2")
        w.add_token_list(TOKENS)
        w.add_token_types([1] * (len(TOKENS) - 1) + [3])
        w.add_token_merges(MERGES)
        w.add_bos_token_id(V - 1)
        w.add_eos_token_id(V - 1)
        w.add_chat_template("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}")

        def f32(*shape: int) -> np.ndarray:
            return (rng.standard_normal(shape) * 0.2).astype(np.float32)

        def add(tname: str, arr: np.ndarray, qtype: Q = Q.F32) -> None:
            if tname == drop:
                return
            if tname == bad_shape:
                arr, qtype = f32(3, 32), Q.F32
            if qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1):
                w.add_tensor(tname, quantize(arr, qtype), raw_dtype=qtype)
            elif qtype == Q.F16:
                w.add_tensor(tname, arr.astype(np.float16))
            elif qtype == Q.BF16:
                bits = (torch.from_numpy(arr).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8))
                w.add_tensor(tname, bits.reshape(arr.shape[0], -1), raw_dtype=Q.BF16)
            else:
                w.add_tensor(tname, arr)

        add("token_embd.weight", f32(V, C))
        add("output_norm.weight", 1 + f32(C))
        add("output.weight", f32(V, C), Q.Q8_0)
        for i in range(L):
            add(f"blk.{i}.attn_norm.weight", 1 + f32(C))
            add(f"blk.{i}.ffn_norm.weight", 1 + f32(C))
            add(f"blk.{i}.attn_q.weight", permute(f32(H * hd, C), H), Q.Q4_0)
            add(f"blk.{i}.attn_k.weight", permute(f32(KV * hd, C), KV), Q.Q4_1)
            add(f"blk.{i}.attn_v.weight", f32(KV * hd, C), Q.Q8_0)
            add(f"blk.{i}.attn_output.weight", f32(C, H * hd), Q.F16)
            add(f"blk.{i}.ffn_gate.weight", f32(F, C), Q.BF16)
            add(f"blk.{i}.ffn_up.weight", f32(F, C), Q.Q8_0)
            down, kq = f"blk.{i}.ffn_down.weight", Q.Q6_K if i % 2 else Q.Q4_K  # rows of F=256: K-quants
            if down == bad_shape:
                add(down, f32(1, 1))
            elif down != drop:
                w.add_tensor(down, random_kquant(C, F, kq, rng), raw_dtype=kq)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    return build
