"""Weight-only quantization of a built model (gpt-fast style: a function, not a flag).

    quantize(model, "int4", int4_sources)   # after `fuse_projections`

Modes: `none` keeps full precision; `int8` makes every linear layer per-channel int8; `int4` makes
them 4-bit groups of 32 but the LM head, which stays int8 (as llama.cpp's Q4 mixes keep the output
layer at 6 bits or more: a 4-bit LM head costs SmolLM2 +7 % perplexity, the rest +0.2 %); `auto`
keeps about the checkpoint's bits: tensors a GGUF stores as 4-bit groups
(Q4_0/Q4_1/Q4_K) become int4 with their codes untouched, 5-bit ones (Q5_0/Q5_1/Q5_K) are requantized to
int4 with an error-minimising search (`Int4Weight.from_float`; the LM head excepted), Q6_K/Q8_0 become
int8, float tensors stay float. `int4_sources` (from `ember.model.weights.gguf.int4_weights`) are those exact
4-bit forms; a layer without one is requantized from its float weight, and inside a fused 4-bit layer
(qkv_proj, gate_up_proj) each part keeps its exact codes where it has them. Embeddings and norms stay in full
precision. A fused layer is as precise as its most precise part (one Q6_K/Q8_0 part makes it int8). Qwen2.5-
Coder-0.5B's Q4_K_M file is mostly Q5_0 (its 896-wide rows do not fit Q4_K's 256-blocks): `auto` runs it at
+2.8 % perplexity, 385 MB per token instead of int8's 495. Under `auto` and `int4` an int8 LM head decodes
int8 x int8 (`Int8Linear(dynamic=True)`: +0.2 % perplexity, 2-3x faster than weight-only on Qwen's head).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ember.model.fuse import FUSED
from ember.model.llama import Attention, Llama
from ember.model.qlinear import INT4_TYPES, Int4Linear, Int4Weight, Int8Linear, QuantLinear, packable_int4

Mode = Literal["none", "auto", "int8", "int4"]
MODES: tuple[Mode, ...] = ("none", "auto", "int8", "int4")
FLOAT_TYPES = ("F32", "F16", "BF16")
FIVE_BIT_TYPES = ("Q5_0", "Q5_1", "Q5_K")  # `auto` runs these as int4 (one bit less; perplexity in RESULTS.md)


def _parts(name: str, model: Llama) -> list[str]:
    """HF weight names a (possibly fused) linear layer was built from."""
    prefix, _, leaf = name.rpartition(".")
    if leaf == "lm_head" and model.config.tie_word_embeddings:
        return ["model.embed_tokens.weight"]
    return [f"{prefix}.{p}.weight" if prefix else f"{p}.weight" for p in FUSED.get(leaf, (leaf,))]


def _target(mode: Mode, name: str, parts: list[str], exact: bool,
            types: dict[str, str]) -> Literal["none", "int8", "int4"]:
    if mode == "int4" and name == "lm_head" and not exact:
        return "int8"
    if mode != "auto":
        return mode
    kinds = [types.get(p, "F32") for p in parts]
    if exact:
        return "int4"
    if all(k in FLOAT_TYPES for k in kinds):
        return "none"
    if name != "lm_head" and all(k in INT4_TYPES or k in FIVE_BIT_TYPES for k in kinds):
        return "int4"
    return "int8"


def _part_rows(module: nn.Module, leaf: str, n: int) -> list[int]:
    """Rows of each part of a fused weight, in `FUSED` order (one part when the layer is not fused)."""
    if leaf == "qkv_proj" and isinstance(module, Attention):
        return [module.n_heads * module.hd, module.n_kv * module.hd, module.n_kv * module.hd]
    if leaf == "gate_up_proj":
        return [n // 2, n // 2]
    return [n]


def _int4_weight(module: nn.Module, leaf: str, weight: torch.Tensor, parts: list[str],
                 sources: dict[str, Int4Weight]) -> Int4Weight:
    """The exact 4-bit codes of the parts the checkpoint stores as 4-bit, the others requantized."""
    if all(p in sources for p in parts):
        return Int4Weight.cat([sources[p] for p in parts])
    rows = _part_rows(module, leaf, weight.shape[0])
    if len(rows) != len(parts) or sum(rows) != weight.shape[0]:
        return Int4Weight.from_float(weight)
    out, r = [], 0
    for p, n in zip(parts, rows, strict=True):
        out.append(sources[p] if p in sources else Int4Weight.from_float(weight[r:r + n]))
        r += n
    return Int4Weight.cat(out)


def quantize(model: Llama, mode: Mode, int4_sources: dict[str, Int4Weight] | None = None,
             types: dict[str, str] | None = None) -> Llama:
    """Replace linear layers in place (attention, MLP, LM head); returns the model. `types`: HF name -> the
    checkpoint's ggml type, which `auto` follows (without it, `auto` keeps everything in full precision)."""
    if mode not in MODES:
        raise ValueError(f"quantization={mode!r}; allowed: {', '.join(MODES)}")
    sources, kinds = int4_sources or {}, types or {}
    done: dict[str, str] = {}
    for module_name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            name = f"{module_name}.{child_name}" if module_name else child_name
            parts = _parts(name, model)
            exact = all(p in sources for p in parts)
            target = _target(mode, name, parts, exact, kinds)
            n, k = child.weight.shape
            if target == "int4" and not packable_int4(n, k):
                target = "int8"
            if target == "none":
                continue
            bias = child.bias
            if target == "int8":
                layer: QuantLinear = Int8Linear(child.weight, bias, dynamic=name == "lm_head" and mode != "int8")
            else:
                layer = Int4Linear(_int4_weight(module, child_name, child.weight, parts, sources), bias)
            setattr(module, child_name, layer)
            done[name] = target
    model.quantization = mode
    model.quantized_layers = done
    return model


def describe(model: Llama) -> str:
    """e.g. 'int4 x 120, int8 x 91' (what `quantize` made), or 'none'."""
    done: dict[str, str] = getattr(model, "quantized_layers", {})
    if not done:
        return "none"
    counts = {t: list(done.values()).count(t) for t in sorted(set(done.values()), reverse=True)}
    return ", ".join(f"{t} x {c}" for t, c in counts.items())


def weight_bytes(model: Llama) -> int:
    """Bytes of weights read per decoded token: every linear layer (the LM head too, tied or not; for a
    quantized layer its packed weights, not its dense bf16 copy), the norms, not the embedding table (one
    row of it is read)."""
    total = 0
    for module in model.modules():
        if isinstance(module, QuantLinear):
            total += module.decode_bytes()
        elif isinstance(module, nn.Linear) or type(module).__name__ == "RMSNorm":
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
