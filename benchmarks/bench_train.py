"""Pre-training speed and a validation-loss curve: the `micro` preset on the SQuAD paragraphs, CPU.

Trains a byte-level BPE on the paragraphs, packs them (5 % held out), pre-trains `micro` for a few minutes
and reports training tokens/s and MFU. The peak that MFU divides by is measured in the same run: the best
fp32 matmul throughput torch reaches on this machine (2048^3), not a datasheet figure. Writes the
train/validation loss curve to benchmarks/train_val_loss.png.

    python benchmarks/bench_train.py [--steps 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ember.model.config import LlamaConfig

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "datasets" / "squad"


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def plot(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(*zip(*train, strict=True), label="train loss", alpha=0.5, lw=1)
    ax.plot(*zip(*val, strict=True), "o-", label="validation loss (held-out paragraphs)", lw=2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    from ember.model.config import PRESETS
    from ember.model.train.config import TrainConfig
    from ember.model.train.corpus import iter_documents
    from ember.model.train.init import new_model
    from ember.model.train.packing import PackedDataset, pack_corpus
    from ember.model.train.tokenizer_train import train_tokenizer
    from ember.model.train.trainer import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--png", type=Path, default=REPO / "benchmarks" / "train_val_loss.png")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--replot", type=Path, help="summarise and plot this metrics.jsonl instead of training")
    ap.add_argument("--peak-gflops", type=float, help="with --replot: the matmul peak measured by the run")
    args = ap.parse_args()
    if args.replot:
        return replot(args.replot, args.peak_gflops, args)
    corpus = [SQUAD / "v2-train-source.json", SQUAD / "dev-v1.1.json"]
    peak = matmul_peak()
    print(f"fp32 matmul peak measured: {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)", flush=True)
    with tempfile.TemporaryDirectory() as td:
        t0 = time.perf_counter()
        tok = train_tokenizer(iter_documents(corpus), 8192)
        meta = pack_corpus(iter_documents(corpus), tok, Path(td) / "data", val_fraction=0.05)
        print(f"tokenizer + packing: {time.perf_counter() - t0:.1f} s; {meta['train_tokens']:,} train / "
              f"{meta['val_tokens']:,} held-out tokens", flush=True)
        config = dataclasses.replace(PRESETS["micro"], vocab_size=tok.vocab_size)
        cfg = TrainConfig(seq_len=args.seq_len, batch_size=args.batch_size, max_steps=args.steps, lr=2e-3,
                          min_lr=2e-4, warmup_steps=max(1, args.steps // 10), eval_every=args.eval_every,
                          eval_batches=4)
        data = PackedDataset(Path(td) / "data" / "train.bin", cfg.seq_len, cfg.batch_size, seed=0)
        val = PackedDataset(Path(td) / "data" / "val.bin", cfg.seq_len, cfg.batch_size, shuffle=False)
        model = new_model(config, seed=0)
        t0 = time.perf_counter()
        result = train(model, data, cfg, Path(td) / "run", val=val,
                       on_record=lambda r: print(json.dumps(r), flush=True) if "val_loss" in r else None)
        wall = time.perf_counter() - t0
    summarize(result.history, config, cfg.tokens_per_step, peak, wall, args.png, args.json)


def summarize(history: list[dict[str, float]], config: LlamaConfig, tokens_per_step: int, peak: float, wall: float,
              png: Path, json_path: Path | None) -> None:
    steps = [r for r in history if "tokens_per_s" in r][2:]  # skip warm-up steps
    tok_s = statistics.median(r["tokens_per_s"] for r in steps)
    flops = statistics.median(r["flops_per_s"] for r in steps)
    vals = [(int(r["step"]), r["val_loss"]) for r in history if "val_loss" in r]
    last = int(history[-1]["step"])
    params = config.num_parameters() / 1e6
    out = {"params_m": params, "tokens_per_step": tokens_per_step, "median_tokens_per_s": tok_s,
           "median_flops_per_s": flops, "matmul_peak_flops": peak, "mfu_vs_measured_peak": flops / peak,
           "wall_s": wall, "steps": last, "val_losses": vals, "history": history}
    print(f"micro ({params:.1f} M params): {tok_s:,.0f} tok/s, {flops / 1e9:.2f} GFLOP/s, "
          f"MFU {100 * flops / peak:.1f} % of the measured fp32 matmul peak; val loss {vals[0][1]:.3f} (step "
          f"{vals[0][0]}) -> {vals[-1][1]:.3f} (step {vals[-1][0]}), {last} steps")
    plot(history, png, f"micro ({params:.0f}M) on SQuAD paragraphs, {tokens_per_step} tokens/step, CPU")
    if json_path:
        json_path.write_text(json.dumps(out, indent=2) + "\n")


def replot(metrics: Path, peak_gflops: float, args: argparse.Namespace) -> None:
    """Figures from the metrics.jsonl of a run that was stopped early."""
    from ember.model.config import PRESETS

    history = [json.loads(line) for line in metrics.open()]
    config = dataclasses.replace(PRESETS["micro"], vocab_size=8192)
    summarize(history, config, args.seq_len * args.batch_size, peak_gflops * 1e9, float("nan"), args.png, args.json)


if __name__ == "__main__":
    main()
