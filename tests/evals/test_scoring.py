"""Log-likelihood scoring of our Llama against transformers' LlamaForCausalLM on the real SmolLM2 (fp32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ember.evals.metrics.perplexity import perplexity
from ember.evals.scoring import LlamaScorer

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]

REQUESTS = [("Question: What is the capital of France?\nAnswer:", " Paris"),
            ("Question: What is the capital of France?\nAnswer:", " a large purple elephant"),
            ("The quick brown fox jumps over the lazy ", "dog"),
            ("Ünïcödé text: ", "café 東京"),
            ("", "Hello world, this is a complete sentence.")]


def hf_loglikelihood(model: Any, tok: Any, context: str, continuation: str) -> tuple[float, bool]:
    """lm-evaluation-harness's HF recipe (`_encode_pair`), one request at a time (no padding)."""
    n_space = len(context) - len(context.rstrip())
    if n_space:  # lm-eval moves the context's trailing whitespace onto the continuation
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole = tok(context + continuation, add_special_tokens=False).input_ids
    ctx = tok(context, add_special_tokens=False).input_ids if context else [tok.eos_token_id]
    if not context:
        whole = [tok.eos_token_id, *whole]
    n = len(whole) - len(ctx)
    with torch.inference_mode():
        logits = model(torch.tensor([whole[:-1]])).logits.float().log_softmax(-1)[0]
    lp = logits[-n:]
    target = torch.tensor(whole[-n:])
    return float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())


@pytest.fixture(scope="module")
def lm(smollm2_folder: Path) -> Any:
    from ember.model.loader import load

    return load(smollm2_folder, dtype="float32")


def test_llama_scorer_matches_transformers(smollm2_hf: Path, lm: Any) -> None:
    transformers = pytest.importorskip("transformers")
    scorer = LlamaScorer(lm.model, lm.tokenizer, max_batch_tokens=64)  # forces several padded batches
    ours = scorer.loglikelihood(REQUESTS)
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_hf, torch_dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_hf)
    for got, (ctx, cont) in zip(ours, REQUESTS, strict=True):
        want, greedy = hf_loglikelihood(hf, tok, ctx, cont)
        assert got.logprob == pytest.approx(want, abs=2e-3)
        assert got.greedy == greedy
        assert got.tokens == len(got.token_logprobs) >= 1
    assert ours[0].logprob > ours[1].logprob  # Paris beats the elephant
    # batching does not change a request's score
    alone = LlamaScorer(lm.model, lm.tokenizer).loglikelihood(REQUESTS[2:3])[0]
    assert alone.logprob == pytest.approx(ours[2].logprob, abs=1e-4)
    ppl = perplexity(ours[4].token_logprobs)
    assert 1.0 < ppl < 1000.0


def test_perplexity_and_choice_tasks_through_the_harness(lm: Any, tmp_path: Path) -> None:
    """Log-likelihood tasks end to end: perplexity of texts, and acc/acc_norm on questions with an obvious answer."""
    import importlib.util
    import json

    from ember.evals.harness import Resources, run_suite
    from ember.evals.suite import SuiteConfig
    spec = importlib.util.spec_from_file_location("evals_scripted", Path(__file__).parent / "scripted.py")
    assert spec and spec.loader
    scripted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scripted)
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"input": t}) + "\n" for t in
                             ["The cat sat on the mat.", "Paris is the capital of France.", "zq xv qq jj kk"]))
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"input": q, "choices": c, "gold": g}) + "\n" for q, c, g in [
        ("Question: What color is the sky on a clear day?", ["blue", "a banana"], 0),
        ("Question: How many legs does a dog have?", ["seventeen thousand", "four"], 1)]))
    suite = SuiteConfig.parse({"name": "ll", "tasks": [
        {"name": "ppl", "kind": "perplexity", "format": "jsonl", "path": str(texts)},
        {"name": "mc", "kind": "choice", "format": "jsonl", "path": str(mc), "prompt": "{input}\nAnswer:"}]})
    res = Resources(data_root=tmp_path, backend=scripted.ScriptedBackend(), model_id="smollm2",
                    scorer=LlamaScorer(lm.model, lm.tokenizer))
    ppl, mc_run = run_suite(suite, res, tmp_path / "run").tasks
    scores = LlamaScorer(lm.model, lm.tokenizer).loglikelihood([("", t["input"]) for t in map(
        json.loads, texts.read_text().splitlines())])
    want = perplexity([x for s in scores for x in s.token_logprobs])
    assert ppl.metrics["perplexity"] == pytest.approx(want, rel=1e-6)
    assert ppl.records[2]["prediction"]["logprob"] < ppl.records[0]["prediction"]["logprob"]
    assert mc_run.metrics["acc"] == 100.0
    # acc_norm divides by the option's length in characters (lm-eval), which can flip the pick
    hits = 0
    for r in mc_run.records:
        per_char = [lp / len(c) for lp, c in zip(r["prediction"]["choice_logprobs"], r["choices"], strict=True)]
        hits += per_char.index(max(per_char)) == r["gold"]
    assert mc_run.metrics["acc_norm"] == 100.0 * hits / 2
