"""Mixtral-style sparse mixture-of-experts feed-forward, chosen by `LlamaConfig.num_local_experts > 0`.

A linear router scores E experts per token; the top k (softmax probabilities, renormalised over the k)
each run a SwiGLU MLP on the token and their outputs are summed with those weights. Parameter names are
HF Mixtral's (`block_sparse_moe.gate`, `experts.N.w1/w2/w3`), so an export loads as `MixtralForCausalLM`.
In training mode the block keeps the Switch/Mixtral load-balancing loss of its last forward in `aux_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ember.model.config import LlamaConfig


class Expert(nn.Module):
    """SwiGLU with Mixtral's names: w1 = gate, w3 = up, w2 = down."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c, i = config.hidden_size, config.intermediate_size
        self.w1 = nn.Linear(c, i, bias=False)
        self.w2 = nn.Linear(i, c, bias=False)
        self.w3 = nn.Linear(c, i, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor, num_experts: int) -> torch.Tensor:
    """E * sum_e (share of routing slots that chose e) * (mean router probability of e); minimum k (balanced).

    probs: (N, E) router softmax; chosen: (N, k) expert indices. As transformers' load_balancing_loss_func.
    """
    routed = F.one_hot(chosen, num_experts).float().mean(0)  # (k, E)
    return num_experts * (routed * probs.float().mean(0)).sum()


class SparseMoE(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.num_experts, self.top_k = config.num_local_experts, config.num_experts_per_tok
        self.gate = nn.Linear(config.hidden_size, self.num_experts, bias=False)  # the router
        self.experts = nn.ModuleList(Expert(config) for _ in range(self.num_experts))
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = x.reshape(-1, C)  # (N, C)
        probs = F.softmax(self.gate(h), dim=-1, dtype=torch.float)  # (N, E)
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (N, k)
        weights = (weights / weights.sum(-1, keepdim=True)).to(h.dtype)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)  # tokens routed to e, and in which of k slots
            if token.numel():
                out.index_add_(0, token, expert(h[token]) * weights[token, slot, None])
        self.aux_loss = load_balancing_loss(probs, chosen, self.num_experts) if self.training else None
        return out.view(B, T, C)


def moe_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Mean load-balancing loss of the MoE blocks' last training forward; None for a dense model."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, SparseMoE) and m.aux_loss is not None]
    return torch.stack(losses).mean() if losses else None
