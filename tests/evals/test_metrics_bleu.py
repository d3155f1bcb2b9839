"""BLEU/chrF come from sacrebleu itself; these tests pin the reference-stream layout we hand it."""

from __future__ import annotations

from typing import Any

import pytest
import sacrebleu

from ember.evals.metrics import bleu

PREDS = ["The cat sat on the mat.", "", "Ünïcödé café!", "...", "a b c d e f"]
REFS: list[list[str]] = [["The cat is on the mat.", "A cat sat on the mat."], ["nothing"], ["Unicode café!"], ["..."],
        ["a b c d e g"]]


def test_corpus_scores_equal_sacrebleu() -> None:
    streams: Any = [[r[0] for r in REFS], [r[1] if len(r) > 1 else None for r in REFS]]
    assert bleu.corpus_bleu(PREDS, REFS) == sacrebleu.corpus_bleu(PREDS, streams).score
    assert bleu.corpus_chrf(PREDS, REFS) == sacrebleu.corpus_chrf(PREDS, streams).score
    single = [[r[0]] for r in REFS]
    assert bleu.corpus_bleu(PREDS, single) == sacrebleu.corpus_bleu(PREDS, [[r[0] for r in REFS]]).score


def test_sentence_scores() -> None:
    for p, r in zip(PREDS, REFS, strict=True):
        assert bleu.sentence_bleu(p, r) == sacrebleu.sentence_bleu(p, r).score
        assert bleu.sentence_chrf(p, r) == sacrebleu.sentence_chrf(p, r).score
    assert bleu.sentence_bleu("same words here today", ["same words here today"]) == pytest.approx(100.0)
