"""`TrainConfig`: the hyper-parameters of one training run. Validates itself on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ember.model.errors import ConfigError


def cpu_has_bf16_matmul() -> bool:
    """AMX tiles: bf16 matmuls run ~6x faster than fp32 there (1.4 vs 0.22 TFLOPS on this project's 2 cores)."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


@dataclass(slots=True)
class TrainConfig:
    seq_len: int = 256  # tokens per packed sequence (pre-training) or the cap per example (SFT)
    batch_size: int = 8  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 1000  # optimizer steps
    lr: float = 3e-4  # peak learning rate
    min_lr: float = 3e-5  # cosine floor
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only (not norms, biases, embeddings)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    eval_every: int = 100  # steps between validation passes; 0 = only at the end
    eval_batches: int = 8  # micro-batches per validation pass
    save_every: int = 0  # steps between checkpoints; 0 = only at the end
    log_every: int = 1
    seed: int = 1337
    device: str = "cpu"
    autocast: str = "auto"  # "auto" = bf16 on CUDA and on CPUs with bf16 matrix units (AMX); "bf16"/"none" force
    compile: bool = False  # torch.compile the training forward (helps on CUDA; slow to warm up on CPU)

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "eval_batches", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        for name in ("warmup_steps", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"min_lr={self.min_lr} must be between 0 and lr={self.lr}")
        if self.warmup_steps > self.max_steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps} exceeds max_steps={self.max_steps}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"betas ({self.beta1}, {self.beta2}) must be in [0, 1)")
        if self.autocast not in ("auto", "bf16", "none"):
            raise ConfigError(f"autocast={self.autocast!r} must be auto, bf16 or none")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device={self.device!r} must be cpu or cuda")

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size * self.grad_accum

    @property
    def use_bf16(self) -> bool:
        if self.autocast != "auto":
            return self.autocast == "bf16"
        return self.device.startswith("cuda") or cpu_has_bf16_matmul()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # Changing these between a checkpoint and its resume would silently change the data order.
    RESUME_KEYS = ("seq_len", "batch_size", "grad_accum", "seed")
