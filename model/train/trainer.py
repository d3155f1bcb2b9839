"""The training loop shared by pre-training and SFT: next-token cross-entropy on (x, y) micro-batches.

Datasets serve micro-batch `i` deterministically (`batch(i) -> (x, y)`, y = IGNORE where no loss is taken),
so the data position of a run is its step count and a checkpoint resumes bit-for-bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ember.model.config import LlamaConfig
from ember.model.errors import EmberError
from ember.model.llama import Llama
from ember.model.moe import moe_aux_loss
from ember.model.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from ember.model.train.config import TrainConfig
from ember.model.train.optim import make_optimizer, make_scheduler
from ember.model.train.sft_data import IGNORE

Record = dict[str, float]


class Batches(Protocol):
    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class TrainingDiverged(EmberError):
    """The loss became NaN or infinite."""


def flops_per_token(config: LlamaConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 N for the matmuls + 12 L T C for attention (PaLM)."""
    lookup = 0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size  # embedding: no matmul
    n = config.num_parameters(active=True) - lookup
    attn = 12 * config.num_hidden_layers * seq_len * config.num_attention_heads * config.dim_head
    return 6 * n + attn


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)


def model_loss(model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss; the vocabulary head runs only on columns that carry a label (SFT prompts are
    mostly unlabelled, and the head of a 150k-token vocabulary is a fifth of a small model's compute)."""
    labelled = (y != IGNORE).any(dim=0)
    if bool(labelled.all()):
        return loss_fn(model(x), y)
    columns = labelled.nonzero().squeeze(1)
    return loss_fn(model(x, select=columns), y[:, columns])


@dataclass
class TrainResult:
    step: int
    history: list[Record] = field(default_factory=list)  # one record per logged step / validation

    def last(self, key: str) -> float | None:
        return next((r[key] for r in reversed(self.history) if key in r), None)


def evaluate(model: Llama, data: Batches, cfg: TrainConfig) -> float:
    """Mean loss over the first `cfg.eval_batches` micro-batches (a fixed held-out set)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(cfg):
        for i in range(cfg.eval_batches):
            x, y = data.batch(i)
            x, y = x.to(cfg.device), y.to(cfg.device)
            n = int((y != IGNORE).sum())
            total += model_loss(model, x, y).item() * n
            count += n
    model.train()
    return total / max(1, count)


def _autocast(cfg: TrainConfig) -> contextlib.AbstractContextManager[object]:
    if cfg.use_bf16:
        return torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(model: Llama, data: Batches, cfg: TrainConfig, out_dir: str | Path, val: Batches | None = None,
          resume: bool = False, on_record: Callable[[Record], None] = lambda _: None,
          until: int | None = None) -> TrainResult:
    """Train the parameters of `model` that require grad for `cfg.max_steps` steps; checkpoints in `out_dir`.

    Writes `out_dir/checkpoint.pt` (every `save_every` steps and at the end) and `out_dir/metrics.jsonl`.
    With `resume`, continues from the checkpoint there, exactly where it stopped. `until` stops (and
    checkpoints) after that many steps while the schedule still spans `cfg.max_steps`: a time-boxed slice.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(cfg.device).train()
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    step, history = 0, []
    if resume and (out / CHECKPOINT).is_file():
        step, history = load_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, cfg)
    else:
        torch.manual_seed(cfg.seed)
    forward = torch.compile(model) if cfg.compile else model
    per_token = flops_per_token(model.config, cfg.seq_len)
    trainable = [p for p in model.parameters() if p.requires_grad]
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as log:
        def record(r: Record) -> None:
            history.append(r)
            log.write(json.dumps(r) + "\n")
            log.flush()
            on_record(r)

        stop = min(cfg.max_steps, until or cfg.max_steps)
        while step < stop:
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, aux_sum, tokens = 0.0, 0.0, 0
            for micro in range(cfg.grad_accum):
                x, y = data.batch(step * cfg.grad_accum + micro)
                x, y = x.to(cfg.device), y.to(cfg.device)
                with _autocast(cfg):
                    loss = model_loss(forward, x, y)
                aux = moe_aux_loss(model)
                total = loss if aux is None else loss + model.config.router_aux_loss_coef * aux
                (total / cfg.grad_accum).backward()
                loss_sum += loss.item()
                aux_sum += 0.0 if aux is None else aux.item()
                tokens += x.numel()
            loss_value = loss_sum / cfg.grad_accum
            if not math.isfinite(loss_value):
                raise TrainingDiverged(f"loss is {loss_value} at step {step}",
                                       hint="Lower the learning rate or raise warmup_steps.")
            norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip) if cfg.grad_clip else None
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            step += 1
            if cfg.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                r: Record = {"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": tokens / dt,
                             "flops_per_s": tokens * per_token / dt}
                if norm is not None:
                    r["grad_norm"] = float(norm)
                if model.config.is_moe:
                    r["aux_loss"] = aux_sum / cfg.grad_accum
                record(r)
            last = step == cfg.max_steps
            if val is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or last):
                record({"step": step, "val_loss": evaluate(model, val, cfg)})
            if (cfg.save_every and step % cfg.save_every == 0) or last or step == stop:
                save_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, step, cfg, history)
    model.eval()
    return TrainResult(step, history)
