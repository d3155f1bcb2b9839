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


def test_llama_scorer_matches_transformers(smollm2_folder: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from ember.model.loader import load

    lm = load(smollm2_folder, dtype="float32")
    scorer = LlamaScorer(lm.model, lm.tokenizer, max_batch_tokens=64)  # forces several padded batches
    ours = scorer.loglikelihood(REQUESTS)
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_folder, torch_dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_folder)
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
