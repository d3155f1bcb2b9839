"""LoRA adapters Ember ships for its registry models, and merging one into a model at load.

`engine.adapter = "auto"` serves a registry model with the adapter shipped for it in
`ember/model/adapters/<model>/` (PEFT format, with the command that trained it in TRAINING.md); today that is
the grounded-QA adapter of qwen2.5-coder-0.5b (evals/RESULTS.md has what it adds). "none" serves the base
weights; a folder path serves that PEFT adapter. The adapter is folded into the float weights before
quantization, so serving pays nothing per token.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ember.model.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

SHIPPED = ("qwen2.5-coder-0.5b",)  # registry models with an adapter in ember/model/adapters/


@cache
def shipped_adapter(model: str) -> Path | None:
    """The folder of the adapter shipped for registry model `model`, or None (looked up once per model)."""
    if model not in SHIPPED:
        return None
    folder = Path(str(resources.files("ember.model").joinpath("adapters", model))).resolve()
    return folder if (folder / "adapter_config.json").is_file() else None


def resolve_adapter(setting: str, model: str) -> Path | None:
    """`engine.adapter` for the model named `model`: "auto", "none" or a PEFT adapter folder."""
    if setting == "none":
        return None
    if setting == "auto":
        return shipped_adapter(model)
    folder = Path(setting).expanduser().resolve()
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"engine.adapter={setting!r} is not a LoRA adapter folder (no adapter_config.json)",
                          hint='Use "auto", "none", or a folder written by `ember train sft` (runs/NAME/adapter).')
    return folder


def merge_adapter(model: nn.Module, folder: Path) -> list[str]:
    """Fold the adapter in `folder` into `model`'s float weights (before `fuse_projections`); returns the HF
    names of the weights it changed."""
    from ember.model.train.lora import load_adapter, lora_layers, merge_lora

    load_adapter(model, folder)
    changed = [f"{name}.weight" for name in lora_layers(model)]
    merge_lora(model)
    return changed
