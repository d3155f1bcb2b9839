"""Exact match and token F1 with SQuAD v1.1 normalisation, equal to the official `evaluate-v1.1.py`.

Scores are fractions in [0, 1] per example; `squad_scores` returns the corpus figures the official script
prints (percentages, unanswered questions count as 0).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation and the articles a/an/the, collapse whitespace (the script's order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1(prediction: str, reference: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in `text` (thousands commas allowed), or None."""
    found = NUMBER.findall(text or "")
    return float(found[-1].replace(",", "")) if found else None


def numeric_match(prediction: str, reference: str) -> float:
    """1.0 when the last number in the prediction equals the reference number (GSM8K's convention)."""
    got, want = last_number(prediction), last_number(reference)
    return float(got is not None and want is not None and abs(got - want) < 1e-6)


def best_over(metric: Callable[[str, str], float], prediction: str, references: Iterable[str]) -> float:
    """The max over several gold answers. No reference at all is a data error, not a zero."""
    refs = list(references)
    if not refs:
        raise ValueError("an example needs at least one reference answer")
    return max(metric(prediction, r) for r in refs)


def squad_scores(dataset: list[dict[str, Any]], predictions: Mapping[str, str]) -> dict[str, float]:
    """`evaluate(dataset, predictions)` of the official script: `dataset` is the JSON's `data` list."""
    em = f = 0.0
    total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                golds = [a["text"] for a in qa["answers"]]
                em += best_over(exact_match, predictions[qa["id"]], golds)
                f += best_over(f1, predictions[qa["id"]], golds)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f / total}
