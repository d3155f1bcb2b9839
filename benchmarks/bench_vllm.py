"""vLLM's figures on the workloads of `workloads.py`: runs inside `.venv-vllm`, prints one JSON line.

The JSON line is all that goes to stdout (vLLM's logs go to stderr).

    .venv-vllm/bin/python benchmarks/bench_vllm.py [--model FOLDER] [--dtype float32] [--repeats 3] [--reserved-cpus N]

`bench_generate.py` calls it as a subprocess to set vLLM beside Ember's engine in the same run. The JSON
keys (times in seconds, rates in tokens per second):

    backend, vllm_version, model, dtype       what ran
    cpus, reserved_cpus                       cores here; --reserved-cpus ("auto": vLLM's default)
    start_s                                   building vllm.LLM: engine processes, weights, warm-up
    batch1_prompt_tokens, batch1_new_tokens   workloads.chat_prompt(), NEW_TOKENS greedy tokens, eos ignored
    batch1_ttft_s, batch1_decode_tok_s        best of --repeats after a warm-up; from vLLM's request metrics:
                                              (new tokens - 1) / (last token - first token)
    throughput_requests, throughput_prompt_tokens, throughput_new_tokens
                                              workloads.mixed_prompts(): 32 requests x NEW_TOKENS, eos ignored
    throughput_s                              wall time of one generate() call for all of them (after warm-up)
    throughput_output_tok_s                   new tokens / throughput_s
    throughput_total_tok_s                    (prompt + new tokens) / throughput_s
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # workloads.py, when run as a script

from workloads import DEFAULT_FOLDER, NEW_TOKENS, chat_prompt, mixed_prompts


def measure(folder: Path, dtype: str, repeats: int) -> dict[str, object]:
    import vllm

    from ember.model.backends.vllm import VLLMBackend
    from ember.model.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
    chat = chat_prompt(folder)
    mixed = mixed_prompts(folder=folder)

    t0 = time.perf_counter()
    backend = VLLMBackend(folder, dtype=dtype, max_model_len=2048)
    start_s = time.perf_counter() - t0

    backend.generate([chat], params)  # warm-up
    runs = [backend.generate([chat], params)[0] for _ in range(repeats)]
    assert all(r.completion_tokens == NEW_TOKENS for r in runs)
    best = max(runs, key=lambda r: r.decode_tokens_per_s)

    backend.generate(mixed[:4], params)  # warm-up at a batch size above one
    t0 = time.perf_counter()
    outs = backend.generate(mixed, params)
    throughput_s = time.perf_counter() - t0
    new_tokens = sum(o.completion_tokens for o in outs)
    prompt_tokens = sum(len(p) for p in mixed)
    assert new_tokens == NEW_TOKENS * len(mixed)
    backend.close()
    return {
        "backend": "vllm", "vllm_version": vllm.__version__, "model": str(folder), "dtype": dtype,
        "cpus": os.cpu_count(), "reserved_cpus": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "auto"),
        "start_s": round(start_s, 2),
        "batch1_prompt_tokens": len(chat), "batch1_new_tokens": NEW_TOKENS,
        "batch1_ttft_s": round(best.timings.first_token_s, 4),
        "batch1_decode_tok_s": round(best.decode_tokens_per_s, 2),
        "throughput_requests": len(mixed), "throughput_prompt_tokens": prompt_tokens,
        "throughput_new_tokens": new_tokens, "throughput_s": round(throughput_s, 2),
        "throughput_output_tok_s": round(new_tokens / throughput_s, 2),
        "throughput_total_tok_s": round((prompt_tokens + new_tokens) / throughput_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reserved-cpus", type=int, default=None,
                    help="cores vLLM keeps off compute for its front end (VLLM_CPU_NUM_OF_RESERVED_CPU); "
                         "default: vLLM's own choice, one core on a small machine")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB: room for 32 x (512 + 128) tokens, on a CPU
    if args.reserved_cpus is not None:
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(args.reserved_cpus)
    # vLLM and its worker processes log to stdout: send fd 1 to stderr, keep stdout for the JSON line alone.
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    print(json.dumps(measure(args.model, args.dtype, args.repeats)), file=result_out, flush=True)


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this file
    main()
