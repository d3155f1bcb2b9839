"""Every registry model on our engine as it is today: file size, load time, peak RSS, batch-1 decode and
prefill tok/s, and oracle-context QA (SQuAD v1.1 dev, the gold paragraph in the prompt, greedy, a
short-answer prompt) on a fixed sample of questions. Each model runs in its own process, one after another.

    python benchmarks/bench_models.py [--models smollm2,qwen2.5-coder-0.5b] [--questions 200] [--json out.json]

Models that are not pulled are skipped (`ember models pull NAME`). The QA prompt is the one issue 13 measured
llama.cpp with; EM/F1 are the official SQuAD normalisation (ember.evals.metrics.qa).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / ".ember" / "models"
SQUAD = REPO.parent / "shared" / "datasets" / "squad" / "dev-v1.1.json"
QA_SYSTEM = "Answer the question using only the passage. Reply with the shortest exact phrase from the passage."
PREFILL_TOKENS = 512
DECODE_TOKENS = 64
BATCH = 8  # QA questions in flight together (continuous batching)


def qa_messages(context: str, question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": QA_SYSTEM},
            {"role": "user", "content": f"Passage: {context}\n\nQuestion: {question}\nAnswer:"}]


def sample_questions(n: int, seed: int = 13) -> list[Any]:
    from ember.evals.datasets import read_squad

    examples, _ = read_squad(SQUAD)
    return random.Random(seed).sample(examples, n)


def worker(name: str, questions: int, quantization: str = "none") -> dict[str, Any]:
    import torch

    from ember.evals.metrics.qa import best_over, exact_match, f1
    from ember.model.engine.llm_engine import EngineConfig, LLMEngine
    from ember.model.loader import load_for_inference
    from ember.model.registry import GGUF_NAME
    from ember.model.sampling_params import SamplingParams

    torch.set_num_threads(os.cpu_count() or 1)
    gguf = MODELS_DIR / name / GGUF_NAME
    t0 = time.perf_counter()
    lm = load_for_inference(gguf, dtype="float32", quantization=quantization)  # as EmberBackend serves it
    load_s = time.perf_counter() - t0
    tok = lm.tokenizer
    engine = LLMEngine(lm.model, tok, EngineConfig(kv_cache_bytes=512 << 20, max_num_seqs=BATCH))
    greedy = SamplingParams(temperature=0, max_tokens=DECODE_TOKENS, ignore_eos=True)
    chat = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Tell me a long story about a fox."}]))
    engine.generate([chat], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))  # warm-up
    decode = max(engine.generate([chat], greedy)[0].decode_tokens_per_s for _ in range(2))
    text = SQUAD.read_text(encoding="utf-8")[:20000]
    long_ids = tok.encode(text)[:PREFILL_TOKENS]
    t1 = time.perf_counter()
    engine.generate([long_ids], SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
    prefill = PREFILL_TOKENS / (time.perf_counter() - t1)

    speed = {"model": name, "quantization": quantization, "file_mb": gguf.stat().st_size / 1e6, "load_s": load_s,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             "decode_tok_s": decode, "prefill_tok_s": prefill}
    if not questions:
        return speed
    qs = sample_questions(questions)
    prompts = [tok.encode(tok.apply_chat_template(qa_messages(q.context, q.input))) for q in qs]
    t2 = time.perf_counter()
    outs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=32, stop=["\n"]))
    qa_s = time.perf_counter() - t2
    preds = [o.text.strip() for o in outs]
    em = 100 * sum(best_over(exact_match, p, q.references) for p, q in zip(preds, qs, strict=True)) / len(qs)
    f = 100 * sum(best_over(f1, p, q.references) for p, q in zip(preds, qs, strict=True)) / len(qs)
    return {**speed, "qa_questions": len(qs), "qa_em": em, "qa_f1": f,
            "qa_s_per_answer": qa_s / len(qs), "examples": [{"q": q.input, "gold": q.references[0], "pred": p}
                                                             for q, p in list(zip(qs, preds, strict=True))[:5]]}


def main() -> None:
    from ember.model.registry import REGISTRY, is_pulled

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(REGISTRY))
    ap.add_argument("--questions", type=int, default=200, help="0: speed only")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quantization", default="none", help="engine.quantization: none | int8 | int4 | auto")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.questions, args.quantization)))
        return
    rows = []
    for name in args.models.split(","):
        if not is_pulled(MODELS_DIR, name):
            print(f"skip {name}: not pulled (ember models pull {name})", file=sys.stderr)
            continue
        print(f"… {name}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--questions", str(args.questions),
                               "--quantization", args.quantization],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads = cores; "
          f"engine.quantization = {args.quantization} (none: fp32 weights dequantized from each GGUF); "
          f"QA: {args.questions} SQuAD v1.1 dev questions (seed 13), "
          f"gold paragraph in the prompt, greedy")
    print("| model | GGUF | load | peak RSS | decode (batch 1) | prefill (512 tok) | oracle QA EM / F1 | s / answer |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        qa = f"{r['qa_em']:.1f} / {r['qa_f1']:.1f} | {r['qa_s_per_answer']:.2f}" if "qa_f1" in r else "- | -"
        print(f"| {r['model']} | {r['file_mb']:,.0f} MB | {r['load_s']:.1f} s | {r['peak_rss_mb']:,.0f} MB | "
              f"{r['decode_tok_s']:.1f} tok/s | {r['prefill_tok_s']:.0f} tok/s | {qa} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
