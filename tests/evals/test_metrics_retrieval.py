"""Ranking metrics equal to pytrec_eval (trec_eval, BEIR's scorer), and bounded when ids repeat."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import pytrec_eval

from ember.evals.metrics.retrieval import mrr_at_k, ndcg_at_k, precision_at_k, ranking_scores, recall_at_k

KS = (1, 3, 5, 10, 20)


def trec(qrels: dict[str, dict[str, int]], runs: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    measures = {f"recall.{','.join(map(str, KS))}", f"P.{','.join(map(str, KS))}",
                f"ndcg_cut.{','.join(map(str, KS))}", "recip_rank"}
    run = {q: {d: float(len(ids) - r) for r, d in enumerate(ids)} for q, ids in runs.items()}  # distinct scores
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def check(qrels: dict[str, dict[str, int]], runs: dict[str, list[str]]) -> None:
    ref = trec(qrels, runs)
    for q, ids in runs.items():
        for k in KS:
            assert recall_at_k(ids, qrels[q], k) == pytest.approx(ref[q][f"recall_{k}"], abs=1e-12)
            assert precision_at_k(ids, qrels[q], k) == pytest.approx(ref[q][f"P_{k}"], abs=1e-12)
            assert ndcg_at_k(ids, qrels[q], k) == pytest.approx(ref[q][f"ndcg_cut_{k}"], abs=1e-12)
        assert mrr_at_k(ids, qrels[q], 10**6) == pytest.approx(ref[q]["recip_rank"], abs=1e-12)


def test_random_graded_fixtures() -> None:
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(40)]
    qrels, runs = {}, {}
    for q in range(200):
        judged = rng.sample(docs, rng.randint(1, 10))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        if all(v == 0 for v in qrels[f"q{q}"].values()):
            qrels[f"q{q}"][judged[0]] = 1
        runs[f"q{q}"] = rng.sample(docs, rng.randint(1, 30))
    check(qrels, runs)


def test_msmarco_qrels_with_bm25_like_runs(shared: Path) -> None:
    folder = shared / "retrieval" / "msmarco-subset50"
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / "test.tsv").open() as f:
        for q, d, r in csv.reader(f, delimiter="\t"):
            qrels.setdefault(q, {})[d] = int(r)
    corpus = [json.loads(line)["_id"] for line in (folder / "corpus.jsonl").open()]
    rng = random.Random(1)
    runs = {}
    for q, rel in qrels.items():  # relevant docs mixed into random ones at random ranks
        ids = rng.sample(corpus, 25)
        for d in rel:
            ids.insert(rng.randint(0, len(ids)), d)
        runs[q] = list(dict.fromkeys(ids))
    check(qrels, runs)


def test_repeated_ids_stay_in_range() -> None:
    qrels = {"a": 1, "b": 2}
    ranked = ["a", "a", "a", "b", "b", "x"]
    for k in KS:
        for name, v in ranking_scores(ranked, qrels, [f"recall@{k}", f"precision@{k}", f"mrr@{k}",
                                                       f"ndcg@{k}"]).items():
            assert 0.0 <= v <= 1.0, name
    assert recall_at_k(ranked, qrels, 2) == 1.0  # duplicates do not push "b" out of the top 2
    assert ndcg_at_k(ranked, qrels, 2) == pytest.approx(ndcg_at_k(["a", "b"], qrels, 2))
    assert precision_at_k(["a"] * 5, {"a": 1}, 5) == pytest.approx(0.2)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        recall_at_k(["a"], {"a": 1}, 0)
    with pytest.raises(ValueError, match="unknown ranking metric"):
        ranking_scores(["a"], {"a": 1}, ["map@5"])
    assert recall_at_k([], {"a": 1}, 5) == 0.0
    assert ndcg_at_k(["a"], {}, 5) == 0.0
