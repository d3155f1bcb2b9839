"""Dequantize llama.cpp (ggml) tensors with vectorized torch ops.

Each function takes the raw bytes of one tensor as a (n_blocks, block_bytes) uint8 tensor and returns
(n_blocks, block_elems) fp32 values, following ggml's reference `dequantize_row_*` in ggml-quants.c.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2),
    2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 8: ("Q8_0", 32, 34),
    12: ("Q4_K", 256, 144), 14: ("Q6_K", 256, 210),
}


def _f16(b: torch.Tensor) -> torch.Tensor:
    """(n, 2k) uint8 -> (n, k) fp32, little-endian halfs."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(n, 16) packed bytes -> (n, 32): low nibbles are elements 0..15, high nibbles 16..31."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1).float()


def q8_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b[:, :2])
    return d * b[:, 2:].contiguous().view(torch.int8).float()


def q4_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b[:, :2])
    return d * (_nibbles(b[:, 2:]) - 8)


def q4_1(b: torch.Tensor) -> torch.Tensor:
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    return d * _nibbles(b[:, 4:]) + m


def _k4_scales_mins(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml's get_scale_min_k4: 12 bytes -> 8 six-bit scales and 8 six-bit mins, (n, 8) each."""
    s = s.int()
    lo_sc, lo_m = s[:, 0:4] & 63, s[:, 4:8] & 63
    hi_sc = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    hi_m = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return torch.cat((lo_sc, hi_sc), 1).float(), torch.cat((lo_m, hi_m), 1).float()


def q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, m = _k4_scales_mins(b[:, 4:16])
    qs = b[:, 16:].reshape(n, 4, 32)  # four 64-element chunks, each 32 bytes
    q = torch.stack((qs & 0x0F, qs >> 4), dim=2).reshape(n, 8, 32).float()  # sub-block j: chunk j//2, nibble j%2
    return ((d * sc)[..., None] * q - (dmin * m)[..., None]).reshape(n, 256)


def q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 64).int()  # two 128-element halves
    qh = b[:, 128:192].reshape(n, 2, 32).int()
    sc = b[:, 192:208].contiguous().view(torch.int8).float().reshape(n, 2, 8)
    d = _f16(b[:, 208:210])  # (n, 1)
    q1 = (ql[:, :, :32] & 0x0F) | (((qh >> 0) & 3) << 4)
    q2 = (ql[:, :, 32:] & 0x0F) | (((qh >> 2) & 3) << 4)
    q3 = (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4)
    q4 = (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4)
    q = (torch.stack((q1, q2, q3, q4), dim=2) - 32).float()  # (n, 2, 4, 32)
    # element l of quarter k in half h uses scale sc[h, 2k + l // 16]
    scale = sc.reshape(n, 2, 4, 2).repeat_interleave(16, dim=-1)  # (n, 2, 4, 32)
    return (d[:, :, None, None] * scale * q).reshape(n, 256)


DEQUANTIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q8_0": q8_0, "Q4_0": q4_0, "Q4_1": q4_1, "Q4_K": q4_k, "Q6_K": q6_k,
}


def dequantize(raw: torch.Tensor, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Raw bytes (any shape, uint8) of a `type_name` tensor -> fp32 tensor of `shape` (row-major)."""
    if type_name == "F32":
        return raw.contiguous().view(torch.uint8).view(torch.float32).reshape(shape)
    if type_name == "F16":
        return raw.contiguous().view(torch.uint8).view(torch.float16).float().reshape(shape)
    if type_name == "BF16":
        return raw.contiguous().view(torch.uint8).view(torch.bfloat16).float().reshape(shape)
    fn = DEQUANTIZERS[type_name]
    _, _, block_bytes = next(v for v in GGML_TYPES.values() if v[0] == type_name)
    blocks = raw.contiguous().view(torch.uint8).reshape(-1, block_bytes)
    return fn(blocks).reshape(shape)
