"""Training checkpoints that resume exactly: trainable weights, optimizer, scheduler, step, RNG states.

The data position is the step count itself (datasets serve micro-batch `i` deterministically), stored
with the settings that define the data order so a resume with a different order is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.model.errors import ConfigError, WeightsError
from ember.model.train.config import TrainConfig

CHECKPOINT = "checkpoint.pt"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, step: int, cfg: TrainConfig,
                    history: list[dict[str, float]]) -> None:
    state: dict[str, Any] = {
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "config": cfg.to_dict(),
        "history": history,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash leaves the previous checkpoint intact


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: TrainConfig) -> tuple[int, list[Any]]:
    """Restore everything in place; returns (step, history)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as e:
        raise WeightsError(path, f"cannot read checkpoint ({e})") from e
    saved = state["config"]
    changed = [k for k in TrainConfig.RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if changed:
        raise ConfigError(f"cannot resume {path}: {', '.join(f'{k} {saved[k]} -> {getattr(cfg, k)}' for k in changed)}"
                          " would change the data order", hint="Resume with the same settings or start a new run.")
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state["model"]) != expected:
        raise WeightsError(path, "its trainable tensors do not match this model (different model or LoRA setup)")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["model"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"]), list(state["history"])
