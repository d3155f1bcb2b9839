"""Perplexity of a text from per-token log-probabilities (natural log), from any scorer that returns them."""

from __future__ import annotations

import math
from collections.abc import Sequence


def perplexity(token_logprobs: Sequence[float]) -> float:
    if not token_logprobs:
        raise ValueError("perplexity needs at least one scored token")
    return math.exp(-sum(token_logprobs) / len(token_logprobs))
