"""Int8 weight-only quantization, applied to a built model (gpt-fast style: a function, not a flag).

Each `nn.Linear` becomes an `Int8Linear`: per-output-channel symmetric int8 weights and bf16 scales, run
by PyTorch's `_weight_int8pack_mm` kernel with bf16 activations. Weights read per token drop 4x against
fp32, which is what batch-1 decode on a CPU is bound by. Embeddings and norms stay in full precision.
"""

from __future__ import annotations

import torch
from torch import nn

from ember.model.llama import Llama


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        self.weight: torch.Tensor
        self.scales: torch.Tensor
        self.register_buffer("weight", torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.weight, self.scales)
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def quantize_int8(model: Llama) -> Llama:
    """Replace every linear layer (attention, MLP, LM head) in place; returns the model."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, Int8Linear(child))
    model.quantization = "int8"
    return model


def weight_bytes(model: Llama) -> int:
    """Bytes of weights read per decoded token: every linear layer (the LM head too, tied or not),
    the norms, not the embedding table (one row of it is read)."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear | Int8Linear) or type(module).__name__ == "RMSNorm":
            for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                total += t.numel() * t.element_size()
    return total


@torch.inference_mode()
def perplexity(model: Llama, ids: list[int], window: int = 512) -> float:
    """Perplexity of `ids` in non-overlapping windows (the fixed-text check for quantization)."""
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor([ids[start:start + window + 1]], device=model.device)
        if chunk.shape[1] < 2:
            break
        logits = model(chunk[:, :-1]).float()
        nll += float(torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum"))
        count += chunk.shape[1] - 1
    return float(torch.exp(torch.tensor(nll / count)))
