"""LoRA: low-rank adapters on a model's linear layers, merge/unmerge, and PEFT-format adapter files.

`LoRALinear` wraps an `nn.Linear`: y = W x + (alpha / r) B A x, with A (r, in) random and B (out, r) zero,
so a fresh adapter leaves the model unchanged. Merging folds B A into W (serving pays nothing); unmerging
subtracts it again. Adapters are saved as `adapter_config.json` + `adapter_model.safetensors` with PEFT's
key names, so `peft.PeftModel.from_pretrained` loads them on the `transformers` model too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ember.model.errors import ConfigError, WeightsError

if TYPE_CHECKING:
    from ember.model.adapter import ServingHints

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR = (*ATTENTION, "gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."


@dataclass(slots=True)
class LoRAConfig:
    r: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ALL_LINEAR

    def __post_init__(self) -> None:
        if self.r <= 0 or self.alpha <= 0:
            raise ConfigError(f"LoRA r={self.r} and alpha={self.alpha} must be > 0")
        unknown = set(self.targets) - set(ALL_LINEAR)
        if not self.targets or unknown:
            raise ConfigError(f"LoRA targets {sorted(unknown) or '[]'} invalid; choose from {', '.join(ALL_LINEAR)}")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and PEFT initialise A
        self.merged = False

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + (x.to(self.lora_A.dtype) @ self.lora_A.T @ self.lora_B.T * self.scale).to(y.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta().to(self.base.weight.dtype)
            self.merged = False


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Wrap the target linears in place and freeze everything but the adapters."""
    if lora_layers(model):
        raise ConfigError("this model already has LoRA adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in cfg.targets]
    if not targets:
        raise ConfigError(f"no linear layer named {', '.join(cfg.targets)} in this model")
    for name, linear in targets:
        parent_name, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent_name), attr, LoRALinear(linear, cfg.r, cfg.alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain `nn.Linear`s back (for export)."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        parent_name, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent_name), attr, layer.base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_adapter(model: nn.Module, cfg: LoRAConfig, folder: str | Path, base_model: str = "",
                 dtype: torch.dtype | None = None, serving: ServingHints | None = None) -> Path:
    """PEFT-format adapter folder (only the A and B matrices, in `dtype` if given: bf16 halves a shipped
    adapter), with `serving` (how to prompt it) in ember-serving.json. Atomic: built beside, then renamed."""
    from safetensors.torch import save_file

    layers = lora_layers(model)
    if not layers:
        raise ConfigError("the model has no LoRA adapters to save")
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {}
    for name, layer in layers.items():
        for ab in "AB":
            t = getattr(layer, f"lora_{ab}").detach().cpu()
            tensors[f"{PEFT_PREFIX}{name}.lora_{ab}.weight"] = (t if dtype is None else t.to(dtype)).contiguous()
    save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.r, "lora_alpha": cfg.alpha,
              "lora_dropout": 0.0, "bias": "none", "target_modules": sorted(cfg.targets),
              "base_model_name_or_path": base_model, "fan_in_fan_out": False, "inference_mode": True}
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if serving is not None:
        serving.save(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def load_adapter(model: nn.Module, folder: str | Path) -> LoRAConfig:
    """Wrap `model` with the adapter saved in `folder` (unmerged; call `merge_lora` to fold it in)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "adapter_model.safetensors"))
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(folder, f"not a LoRA adapter folder ({e})") from e
    if meta.get("peft_type") != "LORA":
        raise WeightsError(folder, f"peft_type={meta.get('peft_type')!r}, expected 'LORA'")
    cfg = LoRAConfig(r=int(meta["r"]), alpha=float(meta["lora_alpha"]), targets=tuple(meta["target_modules"]))
    apply_lora(model, cfg)
    layers = lora_layers(model)
    expected = {f"{PEFT_PREFIX}{n}.lora_{ab}.weight" for n in layers for ab in "AB"}
    if set(tensors) != expected:
        raise WeightsError(folder, "its tensors do not match this model's layers")
    for name, layer in layers.items():
        for ab in "AB":
            want, got = getattr(layer, f"lora_{ab}").shape, tensors[f"{PEFT_PREFIX}{name}.lora_{ab}.weight"].shape
            if want != got:
                raise WeightsError(folder, f"{name}.lora_{ab} has shape {tuple(got)}, this model needs "
                                           f"{tuple(want)}: the adapter was trained for another model")
    with torch.no_grad():
        for name, layer in layers.items():
            layer.lora_A.copy_(tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"])
            layer.lora_B.copy_(tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"])
    return cfg
