"""Issue 18: the sampler is numerically safe for every value `SamplingParams` accepts, and one row's failure is
that row's alone (the engine then fails only that request; see tests/platform/server/test_hardening.py)."""

from __future__ import annotations

import pytest
import torch

from ember.model.engine.sampler import apply_penalties, sample
from ember.model.engine.sequence import Sequence
from ember.model.sampling_params import SamplingParams

VOCAB = 4096
HOSTILE = [dict(temperature=1e-38), dict(temperature=5e-324), dict(temperature=1e-38, top_p=1e-9),
           dict(temperature=1e-38, min_p=1.0), dict(temperature=0.7, repetition_penalty=1e-300),
           dict(temperature=0.7, repetition_penalty=1e-30), dict(temperature=2.0, repetition_penalty=1e300),
           dict(temperature=0, repetition_penalty=1e-300), dict(temperature=1e-38, presence_penalty=-2,
                                                               frequency_penalty=-2, top_k=1)]


def seq(params: dict, prompt: int = 64) -> Sequence:
    s = Sequence(list(range(prompt)), SamplingParams(seed=7, **params), 16)
    s.token_ids += [3, 3, 5]  # some output, for presence/frequency penalties
    return s


@pytest.mark.parametrize("params", HOSTILE, ids=[str(p) for p in HOSTILE])
def test_hostile_parameters_sample_a_real_token(params: dict) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, VOCAB) * 8
    logits[:, 10] = 80.0  # a large logit: 80 / 1e-38 overflows fp32
    seqs = [seq({"temperature": 0.8}), seq(params), seq({"temperature": 0})]
    tokens = sample(logits.clone(), seqs)
    assert all(isinstance(t, int) and 0 <= t < VOCAB for t in tokens), tokens
    assert tokens[2] == int(logits[2].argmax())  # the greedy neighbour is untouched
    if seqs[1].params.penalized:  # no nan, no +inf (-inf only excludes a token)
        row = apply_penalties(logits[1].clone(), seqs[1])
        assert not bool(torch.isnan(row).any()) and not bool(torch.isposinf(row).any())


def test_normal_penalties_equal_transformers_formula() -> None:
    logits = torch.randn(VOCAB) * 5
    s = seq({"repetition_penalty": 1.3})
    seen = torch.tensor(sorted(set(s.token_ids)))
    ref = logits.clone()
    ref[seen] = torch.where(ref[seen] < 0, ref[seen] * 1.3, ref[seen] / 1.3)  # HF RepetitionPenaltyLogitsProcessor
    assert torch.equal(apply_penalties(logits.clone(), s), ref)


def test_a_raising_logits_processor_fails_its_row_only() -> None:
    def broken(output_ids: list[int], row: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("grammar state corrupted")

    logits = torch.randn(3, VOCAB)
    bad = Sequence([1, 2, 3], SamplingParams(temperature=0.5, logits_processors=[broken]), 16)
    tokens = sample(logits, [seq({"temperature": 0}), bad, seq({"temperature": 0.9})])
    assert isinstance(tokens[1], RuntimeError) and "grammar" in str(tokens[1])
    assert tokens[0] == int(logits[0].argmax()) and isinstance(tokens[2], int)
