"""Plain generation path vs `transformers.generate`, same SmolLM2 weights (fp32), measured in one run.

Each side runs in its own subprocess so load time and peak RSS are its own. Prints load seconds, peak
memory, prefill and greedy decode tokens/s, and the ratio ours / transformers.

    python benchmarks/bench_generate.py [--tokens 128] [--repeats 3] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a bottle."}]


def worker(side: str, folder: Path, tokens: int, repeats: int, device: str, dtype: str) -> dict:
    import torch

    torch.set_num_threads(torch.get_num_threads())
    t0 = time.perf_counter()
    if side == "ember":
        from ember.model.generate import GenerationConfig, generate
        from ember.model.loader import load

        lm = load(folder, dtype=dtype, device=device)
        ids = lm.tokenizer.encode(lm.tokenizer.apply_chat_template(PROMPT), add_special_tokens=False)
        load_s = time.perf_counter() - t0

        def run() -> tuple[float, float]:
            g = generate(lm.model, lm.tokenizer, ids, GenerationConfig(max_tokens=tokens, ignore_eos=True))
            assert len(g.token_ids) == tokens
            return g.prefill_seconds, g.decode_seconds
    else:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
        model = model.to(device)  # type: ignore[arg-type]
        model.eval()
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        ids_list = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False)
        ids = torch.tensor([ids_list], device=device)
        model.generation_config.eos_token_id = None
        load_s = time.perf_counter() - t0

        def run() -> tuple[float, float]:
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            a = time.perf_counter()
            model.generate(ids, max_new_tokens=1, do_sample=False)
            sync()
            b = time.perf_counter()
            out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
            sync()
            c = time.perf_counter()
            assert out.shape[1] - ids.shape[1] == tokens
            prefill = b - a
            return prefill, (c - b) - prefill  # decode time: the full run minus its own prefill

    run()  # warm-up
    results = [run() for _ in range(repeats)]
    prefill = min(r[0] for r in results)
    decode = min(r[1] for r in results)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"load_s": load_s, "peak_rss_mb": peak_mb, "prompt_tokens": len(ids) if side == "ember" else ids.shape[1],
            "prefill_tok_s": (len(ids) if side == "ember" else ids.shape[1]) / prefill,
            "decode_tok_s": (tokens - 1) / decode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / ".ember" / "models" / "smollm2")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--worker", choices=["ember", "transformers"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.tokens, args.repeats, args.device, args.dtype)))
        return
    if not (args.model / "config.json").is_file():
        sys.exit(f"{args.model} not found: run `ember models pull smollm2` (or make setup) first")
    res = {}
    for side in ("ember", "transformers"):
        cmd = [sys.executable, __file__, "--worker", side, "--model", str(args.model), "--tokens", str(args.tokens),
               "--repeats", str(args.repeats), "--device", args.device, "--dtype", args.dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res[side] = json.loads(out.stdout.strip().splitlines()[-1])
    import torch

    print(f"SmolLM2-135M-Instruct, {args.dtype} on {args.device}, {args.tokens} greedy tokens, best of {args.repeats}; "
          f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'':14}{'ember':>12}{'transformers':>14}{'ratio':>8}")
    rows = [("load s", "load_s", False), ("peak RSS MB", "peak_rss_mb", False),
            ("prefill tok/s", "prefill_tok_s", True), ("decode tok/s", "decode_tok_s", True)]
    for label, key, _ in rows:
        a, b = res["ember"][key], res["transformers"][key]
        print(f"{label:14}{a:12.1f}{b:14.1f}{a / b:8.2f}")


if __name__ == "__main__":
    main()
