"""LoRA adapters Ember ships for its registry models, and merging one into a model at load.

`engine.adapter = "auto"` serves a registry model with the adapter shipped for it in
`ember/model/adapters/<model>/` (PEFT format, with the command that trained it in TRAINING.md); today that is
the grounded-QA adapter of qwen2.5-coder-0.5b (evals/RESULTS.md has what it adds). "none" serves the base
weights; a folder path serves that PEFT adapter. The adapter is folded into the float weights before
quantization, so serving pays nothing per token.

An adapter folder may also hold `ember-serving.json` (`ServingHints`): how to prompt the model it was trained
for, namely whether its RAG prompt carries the worked examples (an adapter trained without them is served
without them) and the refusal bias tuned for it on the evals' tuning split. `ember train sft` writes it for
an adapter trained on SQuAD data; a folder without it is served with the base model's prompt and no bias.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ember.model.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

SHIPPED = ("qwen2.5-coder-0.5b",)  # registry models with an adapter in ember/model/adapters/
SERVING_FILE = "ember-serving.json"


@dataclass(frozen=True, slots=True)
class ServingHints:
    """How Ember prompts a model served with an adapter: as the adapter was trained."""

    rag_demos: bool = True  # the RAG prompt's worked examples (prompts.DEMOS)
    refusal_bias: float = 0.0  # RefusalBias of RAG answers (tuned on the evals' tuning split; 0 = none)

    def __post_init__(self) -> None:
        if not isinstance(self.rag_demos, bool):
            raise ConfigError(f"rag_demos={self.rag_demos!r} must be true or false")
        if isinstance(self.refusal_bias, bool) or not isinstance(self.refusal_bias, int | float) \
                or not math.isfinite(self.refusal_bias) or abs(self.refusal_bias) > 20:
            raise ConfigError(f"refusal_bias={self.refusal_bias!r} must be a number in [-20, 20]")

    def save(self, folder: Path) -> None:
        (folder / SERVING_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


_HINTS_HINT = 'It holds {"rag_demos": true or false, "refusal_bias": a number}; fix it or delete it.'


@cache
def serving_hints(folder: Path | None) -> ServingHints:
    """The `ServingHints` of the adapter in `folder` (defaults without the file, or without an adapter)."""
    path = None if folder is None else folder / SERVING_FILE
    if path is None or not path.is_file():
        return ServingHints()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
        return ServingHints(**raw)
    except (OSError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError; unknown keys a TypeError
        raise ConfigError(f"{path}: not a valid {SERVING_FILE} ({e})", hint=_HINTS_HINT) from e
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}", hint=_HINTS_HINT) from e


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
