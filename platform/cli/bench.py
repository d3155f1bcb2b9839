"""`ember bench generate`: how fast the configured backend serves this machine."""

from __future__ import annotations

import random
import time
from typing import Annotated

import typer
from rich.table import Table

from ember.platform.cli.common import console, start_backend, wiring_from
from ember.platform.cli.generate import BackendOpt, Model

app = typer.Typer(help="Measure Ember on this machine.", no_args_is_help=True)


@app.command("generate")
def bench_generate(ctx: typer.Context, model: Model = None, backend: BackendOpt = None,
                   requests: Annotated[int, typer.Option(min=1, help="concurrent requests for throughput")] = 32,
                   tokens: Annotated[int, typer.Option(min=2, help="new tokens per request")] = 128,
                   seed: Annotated[int, typer.Option(help="seed for the prompt lengths")] = 0) -> None:
    """Batch-1 decode speed, time to first token, and throughput of many concurrent requests."""
    from ember.model.sampling_params import SamplingParams

    with wiring_from(ctx, model=model, backend=backend) as w:
        b = start_backend(w)
        params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
        text = ("Ember is a self-hosted LLM stack. It serves its own Llama engine with a paged KV cache, "
                "continuous batching and prefix caching. ") * 40
        words = text.split()
        b.generate(["Hello"], SamplingParams(temperature=0, max_tokens=4))  # warm-up
        [one] = b.generate([" ".join(words[:40])], params)
        rng = random.Random(seed)
        prompts = [" ".join(words[: rng.randint(8, 300)]) for _ in range(requests)]
        t0 = time.perf_counter()
        outs = b.generate(list(prompts), params)
        wall = time.perf_counter() - t0
        total = sum(o.completion_tokens for o in outs)
        table = Table("measure", "value", title=f"{b.name} backend")
        table.add_row("batch-1 decode", f"{one.decode_tokens_per_s:.1f} tok/s")
        table.add_row("batch-1 time to first token", f"{one.timings.first_token_s * 1000:.0f} ms")
        table.add_row(f"{requests} requests x {tokens} tokens", f"{total / wall:.1f} tok/s ({wall:.1f} s)")
        table.add_row("throughput / batch-1", f"{total / wall / max(one.decode_tokens_per_s, 1e-9):.1f}x")
        console.print(table)
