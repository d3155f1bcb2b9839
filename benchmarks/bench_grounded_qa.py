"""Grounded QA before/after the LoRA fine-tune: SQuAD v1.1 dev EM/F1 with the gold paragraph as context.

Both models answer the same questions in the same run, with the RAG prompt of ember.model.train.grounded
and greedy decoding on our engine. Only dev articles that the training file (v2-train-source.json) does
not contain are used: 13 of its 16 articles are also in dev-v1.1.json. EM/F1 are computed here and checked
against the official evaluate-v1.1.py on the same predictions (subprocess).

    python benchmarks/bench_grounded_qa.py --adapter .ember/runs/smollm2-rag/adapter [-n 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ember.evals.metrics.qa import exact_match
from ember.evals.metrics.qa import f1 as f1_score  # tested equal to the official SQuAD script

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "datasets" / "squad"


def score(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    em = sum(max(exact_match(predictions[q], g) for g in golds[q]) for q in golds)
    f1 = sum(max(f1_score(predictions[q], g) for g in golds[q]) for q in golds)
    return {"exact_match": 100 * em / len(golds), "f1": 100 * f1 / len(golds)}


def official(subset: dict, predictions: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as td:
        (Path(td) / "data.json").write_text(json.dumps(subset))
        (Path(td) / "pred.json").write_text(json.dumps(predictions))
        out = subprocess.run([sys.executable, str(SQUAD / "evaluate-v1.1.py"), f"{td}/data.json", f"{td}/pred.json"],
                             capture_output=True, text=True, check=True).stdout
    return json.loads(out)


# ---- the run ------------------------------------------------------------------------------------------
def questions(n: int, seed: int) -> tuple[list[dict], dict]:
    from ember.model.train.grounded import squad_titles

    trained = squad_titles(SQUAD / "v2-train-source.json")
    dev = json.loads((SQUAD / "dev-v1.1.json").read_text())
    items = [{"id": qa["id"], "title": a["title"], "context": p["context"], "question": qa["question"],
              "answers": [x["text"] for x in qa["answers"]]}
             for a in dev["data"] if a["title"] not in trained for p in a["paragraphs"] for qa in p["qas"]]
    chosen = random.Random(seed).sample(items, n)
    ids = {q["id"] for q in chosen}
    subset = {"version": "1.1", "data": [
        {"title": a["title"],
         "paragraphs": [{"context": p["context"], "qas": [qa for qa in p["qas"] if qa["id"] in ids]}
                        for p in a["paragraphs"]]} for a in dev["data"]]}
    return chosen, subset


def answer(text: str) -> str:
    """The model's reply, first line, without a trailing period (SQuAD answers are spans)."""
    return text.strip().split("\n")[0].strip()


def run(folder: Path, adapter: Path | None, items: list[dict], max_tokens: int) -> tuple[dict[str, str], float]:
    from ember.model.engine.llm_engine import EngineConfig, LLMEngine
    from ember.model.loader import load
    from ember.model.sampling_params import SamplingParams
    from ember.model.train.grounded import grounded_messages
    from ember.model.train.lora import load_adapter, merge_lora

    lm = load(folder, dtype="float32")
    if adapter is not None:
        load_adapter(lm.model, adapter)
        merge_lora(lm.model)
        lm.model.eval()
    prompts: list[str | list[int]] = [
        lm.tokenizer.encode(lm.tokenizer.apply_chat_template(grounded_messages([q["context"]], q["question"])),
                            add_special_tokens=False) for q in items]
    engine = LLMEngine(lm.model, lm.tokenizer, EngineConfig(kv_cache_bytes=1 << 30, max_num_seqs=32))
    t0 = time.perf_counter()
    with __import__("torch").no_grad():
        completions = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=max_tokens))
    return {q["id"]: answer(c.text) for q, c in zip(items, completions, strict=True)}, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / ".ember" / "models" / "smollm2")
    ap.add_argument("--adapter", type=Path, required=True)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    items, subset = questions(args.n, args.seed)
    golds = {q["id"]: q["answers"] for q in items}
    results: dict[str, dict[str, float]] = {}
    samples: dict[str, dict[str, str]] = {}
    for label, adapter in (("base", None), ("lora", args.adapter)):
        preds, seconds = run(args.model, adapter, items, args.max_tokens)
        ours, ref = score(preds, golds), official(subset, preds)
        assert abs(ours["exact_match"] - ref["exact_match"]) < 1e-9 and abs(ours["f1"] - ref["f1"]) < 1e-9, (ours, ref)
        refusals = sum("not in the context" in p.lower() for p in preds.values())
        results[label] = {**ours, "seconds": seconds, "refusals": refusals}
        samples[label] = dict(list(preds.items())[:5])
        print(f"{label:5s} EM {ours['exact_match']:6.2f}  F1 {ours['f1']:6.2f}  (official script agrees; "
              f"{refusals} refusals; {seconds:.0f} s)", flush=True)
    b, a = results["base"], results["lora"]
    print(f"delta EM {a['exact_match'] - b['exact_match']:+.2f}  F1 {a['f1'] - b['f1']:+.2f}  on {args.n} questions "
          f"from dev articles not in the training file")
    if args.json:
        report = {"n": args.n, "seed": args.seed, **results, "samples": samples}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
