"""Weights of a model trained from scratch: GPT-2 / nanoGPT initialisation.

`Llama(config)` gets PyTorch's layer defaults (N(0, 1) embeddings, which tied to the LM head give logits in
the tens); training from scratch wants small weights instead: N(0, 0.02) everywhere, the residual output
projections scaled by 1/sqrt(2 L) so the residual stream does not grow with depth, zero biases, unit norms.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ember.model.config import LlamaConfig
from ember.model.llama import Llama, RMSNorm


@torch.no_grad()
def init_weights(model: nn.Module, config: LlamaConfig, std: float = 0.02) -> None:
    residual_std = std / math.sqrt(2 * config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name.rsplit(".", 1)[-1]
            nn.init.normal_(module.weight, 0.0, residual_std if last in ("o_proj", "down_proj", "w2") else std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)


def new_model(config: LlamaConfig, seed: int = 0) -> Llama:
    """A freshly initialised fp32 `Llama` on the CPU (deterministic for a seed)."""
    torch.manual_seed(seed)
    model = Llama(config)
    init_weights(model, config)
    return model
