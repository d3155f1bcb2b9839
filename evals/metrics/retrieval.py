"""Ranking metrics from ranked ids and graded relevance judgements, equal to `pytrec_eval` (BEIR's scorer).

`ranked` is the system's ranking, best first; `qrels` maps id -> graded relevance (>= 1 is relevant, as
trec_eval's default `relevance_level`). A ranking that repeats an id counts it once, at its first position
(later copies are dropped before cutting at k), so every metric stays in [0, 1]; a peer bug counted each
copy as a new hit. Definitions (trec_eval): recall@k = relevant in top k / all relevant; precision@k =
relevant in top k / k; MRR@k = 1 / rank of the first relevant id within k (BEIR's MRR@k); nDCG@k with gain
= the grade and discount log2(rank + 1), normalised by the ideal ordering of all judged ids.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

Id = TypeVar("Id", bound=Hashable)


def dedupe(ranked: Sequence[Id]) -> list[Id]:
    seen: set[Id] = set()
    out: list[Id] = []
    for i in ranked:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def recall_at_k(ranked: Sequence[Id], qrels: Mapping[Id, int], k: int) -> float:
    _check_k(k)
    relevant = {i for i, r in qrels.items() if r >= 1}
    if not relevant:
        return 0.0
    return sum(1 for i in dedupe(ranked)[:k] if i in relevant) / len(relevant)


def precision_at_k(ranked: Sequence[Id], qrels: Mapping[Id, int], k: int) -> float:
    _check_k(k)
    return sum(1 for i in dedupe(ranked)[:k] if qrels.get(i, 0) >= 1) / k


def mrr_at_k(ranked: Sequence[Id], qrels: Mapping[Id, int], k: int) -> float:
    _check_k(k)
    for rank, i in enumerate(dedupe(ranked)[:k], 1):
        if qrels.get(i, 0) >= 1:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[Id], qrels: Mapping[Id, int], k: int) -> float:
    _check_k(k)
    dcg = sum(max(qrels.get(i, 0), 0) / math.log2(rank + 1) for rank, i in enumerate(dedupe(ranked)[:k], 1))
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    return dcg / idcg if idcg > 0 else 0.0


METRICS = {"recall": recall_at_k, "precision": precision_at_k, "mrr": mrr_at_k, "ndcg": ndcg_at_k}


def ranking_scores(ranked: Sequence[Id], qrels: Mapping[Id, int], names: Sequence[str]) -> dict[str, float]:
    """Scores for names like "recall@5", "ndcg@10"."""
    out = {}
    for name in names:
        metric, _, k = name.partition("@")
        if metric not in METRICS or not k.isdigit():
            raise ValueError(f"unknown ranking metric {name!r}: use recall@K, precision@K, mrr@K or ndcg@K")
        out[name] = METRICS[metric](ranked, qrels, int(k))
    return out
