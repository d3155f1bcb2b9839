"""Fuse Q/K/V and gate/up projections into one matmul each, applied to a built model for inference.

Batch-1 decode on a CPU is a chain of small matrix-vector products; fewer, larger ones read the same
bytes with less per-call overhead (nano-vllm's `QKVParallelLinear` and `MergedColumnParallelLinear`).
Loading and export keep HF's separate names: this runs after loading and before serving, then
`ember.model.quantize.quantize` (which finds each fused layer's parts through `FUSED`).
"""

from __future__ import annotations

import torch
from torch import nn

from ember.model.llama import MLP, Attention, Llama

FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _cat(linears: list[nn.Linear]) -> nn.Linear:
    w = torch.cat([m.weight.detach() for m in linears])
    fused = nn.Linear(w.shape[1], w.shape[0], bias=linears[0].bias is not None, device=w.device, dtype=w.dtype)
    fused.weight = nn.Parameter(w, requires_grad=False)
    if fused.bias is not None:
        fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in linears]), requires_grad=False)
    return fused


def fuse_projections(model: Llama) -> Llama:
    """In place; idempotent. The separate projections are dropped to free their memory."""
    for module in model.modules():
        if isinstance(module, Attention) and module.qkv_proj is None:
            module.qkv_proj = _cat([module.q_proj, module.k_proj, module.v_proj])
            del module.q_proj, module.k_proj, module.v_proj
        elif isinstance(module, MLP) and module.gate_up_proj is None:
            module.gate_up_proj = _cat([module.gate_proj, module.up_proj])
            del module.gate_proj, module.up_proj
    return model
