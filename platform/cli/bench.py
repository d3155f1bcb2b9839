"""`ember bench generate`: how fast the configured backend serves this machine."""

from __future__ import annotations

import random
import time
from typing import Annotated

import typer
from rich.table import Table

from ember.platform.cli.common import console, start_backend, wiring_from
from ember.platform.cli.generate import BackendOpt, Model
from ember.platform.wiring import Wiring

app = typer.Typer(help="Measure Ember on this machine.", no_args_is_help=True)


@app.command("generate")
def bench_generate(ctx: typer.Context, model: Model = None, backend: BackendOpt = None,
                   requests: Annotated[int, typer.Option(min=1, help="concurrent requests for throughput")] = 32,
                   tokens: Annotated[int, typer.Option(min=2, help="new tokens per request")] = 128,
                   seed: Annotated[int, typer.Option(help="seed for the prompt lengths")] = 0,
                   peers: Annotated[bool, typer.Option(
                       help="also time llama.cpp on the same GGUF file (needs `make bench-peers`)")] = True) -> None:
    """Batch-1 decode speed, time to first token, and throughput of many concurrent requests; with the
    ember backend on a GGUF model, llama.cpp's batch-1 decode on the same file and the ratio."""
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
        peer = _llamacpp(w, " ".join(words[:40]), tokens) if peers else None
        if peer is not None:
            table.add_row("llama.cpp batch-1 decode (same GGUF)", f"{peer:.1f} tok/s")
            table.add_row("ember / llama.cpp", f"{one.decode_tokens_per_s / peer:.2f}x")
        console.print(table)


def _llamacpp(w: Wiring, prompt: str, tokens: int) -> float | None:
    """llama.cpp's batch-1 decode on the very GGUF file the ember backend loaded, same threads; None when
    the backend is not ours, the model is not a GGUF file, or llama-cpp-python is absent (`make bench-peers`)."""
    from ember.model.registry import model_file
    from ember.platform.backends import resolve_model

    if w.settings.backend != "ember":
        return None
    path = model_file(resolve_model(w.settings, w.model_name))
    try:
        from llama_cpp import Llama
    except ImportError:
        console.print("[dim]llama.cpp row skipped: llama-cpp-python is not installed (make bench-peers)[/]")
        return None
    if path.suffix != ".gguf":
        return None
    import torch

    threads = torch.get_num_threads()
    m = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)
    ids = m.tokenize(prompt.encode())
    best = 0.0
    for _ in range(2):
        n, t1 = 0, 0.0
        for n, _tok in enumerate(m.generate(ids, temp=0.0, top_k=1, reset=True), start=1):
            if n == 1:
                t1 = time.perf_counter()
            if n == tokens:
                break
        best = max(best, (n - 1) / max(time.perf_counter() - t1, 1e-9))
    m.close()
    return best
