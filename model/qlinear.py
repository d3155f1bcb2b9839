"""Weight-only quantized linear layers computed from packed weights (gpt-fast's int8/int4, on the CPU).

Batch-1 decode on a CPU is bound by the bytes of weights read per token, so a few-row input runs
PyTorch's packed kernels straight from the quantized weights (`_weight_int8pack_mm`: per-output-channel
int8; `_weight_int4pack_mm_for_cpu`: 4-bit codes in groups of 32 along the input with a scale and a zero
each). Those kernels are matrix-vector loops: from `SMALL_M` rows up (prefill, a wide decode batch) a
bf16 matmul on the dense dequantized weights is several times faster (AMX/AVX-512 bf16), so each layer
also keeps that bf16 copy. Both paths compute the same quantized weights; activations go in as bf16.
On CUDA only the dense bf16 path runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GROUP = 32  # elements per 4-bit group (ggml's block size for Q4_0/Q4_1 and Q4_K's sub-blocks)
INT4_TYPES = ("Q4_0", "Q4_1", "Q4_K")  # ggml types whose codes reach the int4 kernels unchanged
SMALL_M = 4  # rows up to which the packed kernels beat a dense bf16 matmul (benchmarks/bench_qlinear.py)


@dataclass
class Int4Weight:
    """A weight in 4-bit groups: w[n, g*32 + i] = scale[n, g] * codes[n, g*32 + i] + offset[n, g]."""

    codes: torch.Tensor  # (N, K) uint8 in 0..15
    scale: torch.Tensor  # (N, K // 32) fp32
    offset: torch.Tensor  # (N, K // 32) fp32

    def __post_init__(self) -> None:
        n, k = self.codes.shape
        if k % GROUP or self.scale.shape != (n, k // GROUP) or self.offset.shape != self.scale.shape:
            raise ValueError(f"inconsistent 4-bit weight: codes {tuple(self.codes.shape)}, "
                             f"scale {tuple(self.scale.shape)}, offset {tuple(self.offset.shape)}")

    @classmethod
    def from_float(cls, w: torch.Tensor, search: bool = True) -> Int4Weight:
        """Asymmetric 4-bit groups of 32 from a float weight (a lossy requantization).

        With `search` (the default), each group tries its min/max range shrunk by a few factors, refits scale
        and offset to the rounded codes by least squares, and keeps the candidate with the least squared error
        (llama.cpp's make_qkx quantizers do the same); without it, plain min/max rounding."""
        n, k = w.shape
        if k % GROUP:
            raise ValueError(f"in_features {k} is not a multiple of {GROUP}")
        codes, scale, offset = [], [], []
        step = max(1, (1 << 22) // k)  # rows per chunk: about 4M elements of fp32 work at a time
        for r in range(0, n, step):
            c, s, o = _int4_groups(w[r:r + step].detach().float().reshape(-1, k // GROUP, GROUP), search)
            codes.append(c.reshape(-1, k))
            scale.append(s)
            offset.append(o)
        return cls(torch.cat(codes), torch.cat(scale), torch.cat(offset))

    @classmethod
    def cat(cls, parts: list[Int4Weight]) -> Int4Weight:
        return cls(torch.cat([p.codes for p in parts]), torch.cat([p.scale for p in parts]),
                   torch.cat([p.offset for p in parts]))

    def permute_rows(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Int4Weight:
        return Int4Weight(fn(self.codes), fn(self.scale), fn(self.offset))

    def dequantize(self) -> torch.Tensor:
        n, k = self.codes.shape
        g = self.codes.reshape(n, k // GROUP, GROUP).float()
        return (g * self.scale[..., None] + self.offset[..., None]).reshape(n, k)


SHRINK = (1.0, 0.9)  # range factors `from_float` tries per group (more find no better: RESULTS.md)


def _int4_candidate(g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, f: float, refit: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes, scale, offset and squared error of the range [lo, hi] shrunk by `f` about its middle."""
    mid = (hi + lo) / 2
    a, b = mid - (mid - lo) * f, mid + (hi - mid) * f
    scale = ((b - a) / 15).clamp(min=1e-10)
    codes = torch.round((g - a[..., None]) / scale[..., None]).clamp(0, 15)
    if refit:  # least-squares scale and offset for these codes
        qm, wm = codes.mean(-1), g.mean(-1)
        dq = codes - qm[..., None]
        var = (dq * dq).sum(-1)
        fit = (dq * (g - wm[..., None])).sum(-1) / var.clamp(min=1e-12)
        ok = var > 0
        scale = torch.where(ok, fit, scale).clamp(min=1e-10)
        a = torch.where(ok, wm - scale * qm, a)
    err = ((codes * scale[..., None] + a[..., None] - g) ** 2).sum(-1)
    return codes, scale, a, err


def _int4_groups(g: torch.Tensor, search: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 32) fp32 groups -> codes (uint8 0..15), scale, offset: the least squared error candidate."""
    lo, hi = g.amin(-1), g.amax(-1)
    codes, scale, off, err = _int4_candidate(g, lo, hi, 1.0, False)
    for f in SHRINK if search else ():
        c, s, o, e = _int4_candidate(g, lo, hi, f, True)
        take = e < err
        codes = torch.where(take[..., None], c, codes)
        scale, off, err = torch.where(take, s, scale), torch.where(take, o, off), torch.where(take, e, err)
    return codes.to(torch.uint8), scale, off


def packable_int4(n: int, k: int) -> bool:
    """The CPU int4 kernel's shape rules: N a multiple of 16, K of the group size."""
    return n % 16 == 0 and k % GROUP == 0


class QuantLinear(nn.Module):
    """Shared part of the int8/int4 layers: the dense bf16 copy, the bias, the row-count dispatch."""

    bits: int

    def __init__(self, dense: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = dense.shape
        self.dense: torch.Tensor
        self.register_buffer("dense", dense.to(torch.bfloat16).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    def packed_mm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        small = x2.shape[0] <= SMALL_M and x2.device.type == "cpu"
        y = self.packed_mm(x2) if small else F.linear(x2, self.dense)
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def decode_bytes(self) -> int:
        """Bytes of weights the packed path reads per token (the dense copy is not read at batch 1)."""
        raise NotImplementedError


class Int8Linear(QuantLinear):
    """Symmetric per-output-channel int8 weights, bf16 scales.

    `dynamic=True` (the LM head) runs the few-row path as int8 x int8 through PyTorch's x86 quantized engine
    (FBGEMM): each call quantizes its activations to 8 bits over their own range. On a 151,936 x 896 head
    that takes 9 ms per row against 20-27 ms for `_weight_int8pack_mm`, for +0.2 % perplexity on
    Qwen2.5-Coder-0.5B (benchmarks/RESULTS.md). Only after the final norm are activations this well behaved;
    inner layers keep weight-only int8."""

    bits = 8

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, dynamic: bool = False) -> None:
        w = weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        s16 = scales.to(torch.bfloat16)
        super().__init__(q.float() * s16.float()[:, None], bias)
        self.weight: torch.Tensor
        self.scales: torch.Tensor
        self.register_buffer("weight", q)
        self.register_buffer("scales", s16)
        self._dynamic = _prepack_dynamic(q, s16) if dynamic else None

    def packed_mm(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic is not None:
            return torch.ops.quantized.linear_dynamic(x.float().contiguous(), self._dynamic, False)
        return torch._weight_int8pack_mm(x, self.weight, self.scales)

    def decode_bytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * 2


def _prepack_dynamic(q: torch.Tensor, scales: torch.Tensor) -> object | None:
    """FBGEMM's packed form of int8 weights, or None where this torch has no x86 quantized engine (PyTorch
    deprecates its quantized tensors; without them the head falls back to `_weight_int8pack_mm`)."""
    if "x86" not in torch.backends.quantized.supported_engines:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "quantized tensor creation ... deprecated"
            zeros = torch.zeros(q.shape[0], dtype=torch.long)
            qw = torch._make_per_channel_quantized_tensor(q, scales.double(), zeros, 0)
            return torch.ops.quantized.linear_prepack(qw, None)
    except (AttributeError, RuntimeError, NotImplementedError):
        return None


class Int4Linear(QuantLinear):
    """4-bit codes in groups of 32, packed once for `_weight_int4pack_mm_for_cpu`; scale and zero in bf16."""

    bits = 4

    def __init__(self, weight: Int4Weight, bias: torch.Tensor | None = None) -> None:
        n, k = weight.codes.shape
        if not packable_int4(n, k):
            raise ValueError(f"int4 kernels need out % 16 == 0 and in % {GROUP} == 0, got ({n}, {k})")
        scale = weight.scale.to(torch.bfloat16)
        zero = (weight.offset + 8 * weight.scale).to(torch.bfloat16)  # kernel: w = (q - 8) * scale + zero
        # the dense copy is what the kernel computes: the bf16 scale and zero, not the exact fp32 ones
        g = weight.codes.reshape(n, k // GROUP, GROUP).float() - 8
        super().__init__((g * scale.float()[..., None] + zero.float()[..., None]).reshape(n, k), bias)
        self.packed: torch.Tensor
        self.scales_zeros: torch.Tensor
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(weight.codes.int(), 1))
        self.register_buffer("scales_zeros", torch.stack([scale, zero], -1).transpose(0, 1).contiguous())

    def packed_mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(x, self.packed, GROUP, self.scales_zeros)

    def decode_bytes(self) -> int:
        return self.packed.numel() + self.scales_zeros.numel() * 2
