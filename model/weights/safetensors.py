"""Read and write HF safetensors checkpoints (single file or sharded with an index)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ember.model.errors import WeightsError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def checkpoint_files(folder: Path) -> list[Path]:
    if (folder / INDEX).is_file():
        try:
            weight_map = json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise WeightsError(folder / INDEX, f"malformed shard index ({e})") from e
        files = [folder / name for name in sorted(set(weight_map.values()))]
    elif (folder / SINGLE).is_file():
        files = [folder / SINGLE]
    else:
        raise WeightsError(folder, f"no {SINGLE} or {INDEX}",
                           hint="Ember loads HF safetensors folders; convert .bin checkpoints first.")
    for f in files:
        if not f.is_file():
            raise WeightsError(f, "shard listed in the index is missing")
    return files


def load_safetensors(folder: str | Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in checkpoint_files(Path(folder)):
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f, f"corrupt or truncated safetensors file ({e})") from e
    return state


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Atomic: write a temporary file, fsync, rename."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
