"""Citation precision: the share of cited passages that contain a gold answer (SQuAD-normalised substring)."""

from __future__ import annotations

from collections.abc import Sequence

from ember.evals.metrics.qa import normalize_answer


def supports(passage: str, answers: Sequence[str]) -> bool:
    text = f" {normalize_answer(passage)} "
    return any(a and f" {a} " in text for a in (normalize_answer(x) for x in answers))


def citation_precision(cited_passages: Sequence[str], answers: Sequence[str]) -> float | None:
    """None when nothing was cited (undefined, left out of the mean rather than counted as 0 or 1)."""
    if not cited_passages:
        return None
    return sum(supports(p, answers) for p in cited_passages) / len(cited_passages)
