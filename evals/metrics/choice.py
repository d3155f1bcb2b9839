"""Multiple-choice accuracy, as lm-evaluation-harness computes it.

`acc`: the option with the highest total log-likelihood of its continuation given the question.
`acc_norm`: the same divided by the option's length in characters (lm-eval's `acc_norm`). Ties go to the
first option (numpy argmax). Generated-letter scoring reads the first standalone option letter of a reply.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence


def argmax(values: Sequence[float]) -> int:
    if not values:
        raise ValueError("no options to choose from")
    return max(range(len(values)), key=lambda i: (values[i], -i))


def choose(logprobs: Sequence[float], choices: Sequence[str], normalize: bool = False) -> int:
    if len(logprobs) != len(choices):
        raise ValueError(f"{len(logprobs)} log-likelihoods for {len(choices)} choices")
    if normalize:
        return argmax([lp / max(len(c), 1) for lp, c in zip(logprobs, choices, strict=True)])
    return argmax(logprobs)


def letters(n: int) -> str:
    if not 1 <= n <= 26:
        raise ValueError(f"letter scoring supports 1-26 options, got {n}")
    return string.ascii_uppercase[:n]


def parse_letter(reply: str, n: int) -> int | None:
    """Index of the first standalone option letter in `reply` ("B", "(B)", "B.", "Answer: B"), else None."""
    m = re.search(rf"\b([{letters(n)}])\b", reply.strip())
    return None if m is None else ord(m.group(1)) - ord("A")


def accuracy(predicted: Sequence[int | None], gold: Sequence[int]) -> float:
    if len(predicted) != len(gold):
        raise ValueError("predictions and gold labels differ in length")
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold) if gold else 0.0
