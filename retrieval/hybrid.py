"""Reciprocal-rank fusion: score(d) = sum over rankings of 1 / (k + rank(d)), rank starting at 1.

RRF needs no score calibration between BM25 and cosine similarity, which live on unrelated scales;
k = 60 is the value from Cormack, Clarke and Büttcher (2009) and is not tuned on our benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence

from ember.retrieval.errors import InvalidSearchError

RRF_K = 60


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K, limit: int | None = None) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first) into [(id, fused score)], best first; ties keep first-seen order."""
    if k < 0:
        raise InvalidSearchError(f"RRF k must be non-negative, got {k}")
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    fused = sorted(scores.items(), key=lambda item: -item[1])
    return fused[:limit] if limit is not None else fused
