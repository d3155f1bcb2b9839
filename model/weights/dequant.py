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
    2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 20: ("IQ4_NL", 32, 18),
}
IQ4_NL_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


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


def _high_bits(qh: torch.Tensor) -> torch.Tensor:
    """(n, 4) bytes = one little-endian uint32 of 32 fifth bits -> (n, 32) uint8 values 0/16."""
    shifts = torch.arange(8, dtype=torch.uint8)
    return (((qh[:, :, None] >> shifts) & 1) << 4).reshape(qh.shape[0], 32)


def _nibbles_u8(qs: torch.Tensor) -> torch.Tensor:
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


def q5_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b[:, :2])
    q = (_nibbles_u8(b[:, 6:]) | _high_bits(b[:, 2:6])).to(torch.int8) - 16
    return d * q.float()


def q5_1(b: torch.Tensor) -> torch.Tensor:
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    return d * (_nibbles_u8(b[:, 8:]) | _high_bits(b[:, 4:8])).float() + m


def iq4_nl(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b[:, :2])
    return d * torch.tensor(IQ4_NL_VALUES, dtype=torch.float32)[_nibbles(b[:, 2:]).long()]


def _bit_planes(q: torch.Tensor, shifts: int, width: int) -> torch.Tensor:
    """(n, c, 32) bytes -> (n, c, shifts, 32): field k of each byte is (q >> k*width) & mask."""
    s = torch.arange(0, shifts * width, width, dtype=torch.int32).reshape(1, 1, shifts, 1)
    return (q.int()[:, :, None, :] >> s) & ((1 << width) - 1)


def q2_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    scales, qs = b[:, 0:16].int(), b[:, 16:80].reshape(n, 2, 32)
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = (d * (scales & 0xF).float()).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).reshape(n, 16, 1)
    q = _bit_planes(qs, 4, 2).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, 256)


def q3_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    hmask, qs, packed = b[:, 0:32].reshape(n, 1, 32), b[:, 32:96].reshape(n, 2, 32), b[:, 96:108].int()
    d = _f16(b[:, 108:110])
    low = torch.stack((packed[:, 0:8] & 0xF, packed[:, 0:8] >> 4), 1).reshape(n, 16)
    high = ((packed[:, 8:12][:, None, :] >> torch.tensor([0, 2, 4, 6]).reshape(1, 4, 1)) & 3).reshape(n, 16)
    scales = ((low | (high << 4)) - 32).float()
    dl = (d * scales).reshape(n, 16, 1)
    ql = _bit_planes(qs, 4, 2).reshape(n, 16, 16)
    qh = (_bit_planes(hmask, 8, 1).reshape(n, 16, 16)) ^ 1  # a set bit means no -4 offset
    return (dl * (ql - (qh << 2)).float()).reshape(n, 256)


def q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, m = _k4_scales_mins(b[:, 4:16])
    qh, qs = b[:, 16:48].reshape(n, 1, 32), b[:, 48:176].reshape(n, 4, 32)
    ql = _bit_planes(qs, 2, 4).reshape(n, 8, 32)
    hi = _bit_planes(qh, 8, 1).reshape(n, 8, 32)
    q = (ql | (hi << 4)).float()
    return ((d * sc)[..., None] * q - (dmin * m)[..., None]).reshape(n, 256)


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
    "Q8_0": q8_0, "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1, "IQ4_NL": iq4_nl,
    "Q2_K": q2_k, "Q3_K": q3_k, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k,
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


# ---- exact 4-bit group form ------------------------------------------------------------------------------
# Q4_0, Q4_1 and Q4_K store, per group of 32 weights along the input dimension, 4-bit codes q with one scale
# and one offset: w = scale * q + offset. That is exactly the form PyTorch's packed int4 kernels compute,
# w = (q - 8) * scale + zero with zero = offset + 8 * scale, so these tensors reach the int4 kernels with
# their codes untouched (only scale/zero are rounded to the kernels' bf16).
INT4_GROUP = 32


def int4_groups(blocks: torch.Tensor, type_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(n_blocks, block_bytes) uint8 -> codes (n_groups, 32) uint8, scale and offset (n_groups,) fp32, such
    that the dequantized group is scale * codes + offset; None for types that are not 4-bit groups of 32."""
    if type_name == "Q4_0":
        d = _f16(blocks[:, :2])
        return _nibbles_u8(blocks[:, 2:]), d[:, 0], -8 * d[:, 0]
    if type_name == "Q4_1":
        d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
        return _nibbles_u8(blocks[:, 4:]), d[:, 0], m[:, 0]
    if type_name == "Q4_K":
        n = blocks.shape[0]
        d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
        sc, m = _k4_scales_mins(blocks[:, 4:16])
        qs = blocks[:, 16:].reshape(n, 4, 32)
        q = torch.stack((qs & 0x0F, qs >> 4), dim=2).reshape(n * 8, 32)
        return q, (d * sc).reshape(-1), (-(dmin * m)).reshape(-1)
    return None

