"""Scores per example (natural units, 0-1) and the run's figures per task (percentages, like the field reports).

Per-example metrics: exact_match, f1, numeric_match, rouge1/2/L/Lsum (F-measure), acc, acc_norm, recall@K,
precision@K, mrr@K, ndcg@K, citation_precision, and for questions that may be unanswerable (no reference): refusal
(the answer says the documents do not say; defined on unanswerable questions only) and false_refusal (the same, on
answerable ones); exact_match and f1 are then defined on the answerable ones only. Corpus metrics, computed over
all records of a task: bleu, chrf, perplexity. A metric that is undefined for an example (citation precision with
no citation) is None and left out of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ember.evals.datasets import Example
from ember.evals.metrics import choice, qa, rouge
from ember.evals.metrics.citation import citation_precision
from ember.evals.metrics.retrieval import METRICS as RANKING
from ember.evals.metrics.retrieval import ranking_scores
from ember.evals.suite import TaskConfig
from ember.model.errors import InvalidValueError

CORPUS_METRICS = ("bleu", "chrf", "perplexity")


def _is_ranking(name: str) -> bool:
    return name.partition("@")[0] in RANKING


def check_metrics(task: TaskConfig) -> None:
    known = {"exact_match", "f1", "numeric_match", "acc", "acc_norm", "citation_precision", "refusal",
             "false_refusal", *rouge.ROUGE_TYPES,
             *CORPUS_METRICS}
    bad = [m for m in task.metric_names if m not in known and not _is_ranking(m)]
    if bad:
        raise InvalidValueError(f"task {task.name!r}: unknown metrics {bad}; known: {sorted(known)}, recall@K, "
                         "precision@K, mrr@K, ndcg@K")


def grade(task: TaskConfig, ex: Example, pred: dict[str, Any]) -> dict[str, float | None]:
    """`pred` is a `Prediction` as stored (a dict)."""
    names = [m for m in task.metric_names if m not in CORPUS_METRICS]
    out: dict[str, float | None] = {}
    text: str = pred.get("text", "")
    wanted_rouge = [m for m in names if m in rouge.ROUGE_TYPES]
    if wanted_rouge:
        for k, s in rouge.score_multi(list(ex.references), text, wanted_rouge, task.stem).items():
            out[k] = s.fmeasure
    for m in names:
        if m in ("exact_match", "f1", "numeric_match") and not ex.references:
            out[m] = None  # an unanswerable question: scored by refusal, not by overlap
        elif m in ("refusal", "false_refusal"):
            refused = pred.get("refused")
            if refused is None:
                from ember.model.prompts import is_refusal

                refused = is_refusal(pred.get("raw") or text)
            out[m] = float(refused) if (m == "refusal") == (not ex.references) else None
        elif m == "exact_match":
            out[m] = qa.best_over(qa.exact_match, text, ex.references)
        elif m == "f1":
            out[m] = qa.best_over(qa.f1, text, ex.references)
        elif m == "numeric_match":
            out[m] = qa.best_over(qa.numeric_match, text, ex.references)
        elif m in ("acc", "acc_norm"):
            if pred.get("choice_logprobs") is not None:
                picked = choice.choose(pred["choice_logprobs"], ex.choices, normalize=m == "acc_norm")
            elif m == "acc":
                picked = pred.get("choice")
            else:
                continue  # acc_norm means nothing for a generated letter
            out[m] = float(picked == ex.gold)
        elif m == "citation_precision":
            out[m] = citation_precision([p["text"] for p in pred.get("cited", [])], ex.references)
        elif _is_ranking(m):
            ranked = [p["id"] for p in pred.get("retrieved", [])]
            out.update(ranking_scores(ranked, ex.qrels, [m]))
    return out


def aggregate(task: TaskConfig, examples: Sequence[Example], records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Figures for one task: means as percentages; corpus BLEU/chrF (0-100) and perplexity."""
    out: dict[str, float] = {}
    for m in task.metric_names:
        if m in CORPUS_METRICS:
            continue
        values = [r["scores"][m] for r in records if r["scores"].get(m) is not None]
        if values:
            out[m] = 100.0 * sum(values) / len(values)
    if {"bleu", "chrf"} & set(task.metric_names) and records:
        from ember.evals.metrics import bleu

        preds = [r["prediction"]["text"] for r in records]
        refs = [list(ex.references) for ex in examples]
        if "bleu" in task.metric_names:
            out["bleu"] = bleu.corpus_bleu(preds, refs)
        if "chrf" in task.metric_names:
            out["chrf"] = bleu.corpus_chrf(preds, refs)
    if "perplexity" in task.metric_names and records:
        lp = sum(r["prediction"]["logprob"] for r in records)
        n = sum(r["prediction"]["tokens"] for r in records)
        out["perplexity"] = math.exp(-lp / n) if n else float("nan")
    return out
