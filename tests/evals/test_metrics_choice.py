"""Multiple choice (lm-eval's acc / acc_norm), letters, citation precision, perplexity."""

from __future__ import annotations

import math

import pytest

from ember.evals.metrics.choice import accuracy, choose, parse_letter
from ember.evals.metrics.citation import citation_precision
from ember.evals.metrics.perplexity import perplexity


def test_acc_and_acc_norm() -> None:
    choices = ["a", "a much longer option"]
    lps = [-3.0, -10.0]
    assert choose(lps, choices) == 0
    assert choose(lps, choices, normalize=True) == 1  # -10/20 > -3/1
    assert choose([-1.0, -1.0], ["x", "y"]) == 0  # ties: first option, like numpy.argmax
    with pytest.raises(ValueError):
        choose([-1.0], ["x", "y"])
    assert accuracy([0, 1, None], [0, 0, 1]) == pytest.approx(1 / 3)


@pytest.mark.parametrize(("reply", "n", "want"), [
    ("B", 4, 1), ("(C) because", 4, 2), ("Answer: D.", 4, 3), ("a", 4, None), ("E", 4, None), ("", 4, None),
    ("The answer is A", 4, 0),
])
def test_parse_letter(reply: str, n: int, want: int | None) -> None:
    assert parse_letter(reply, n) == want


def test_citation_precision() -> None:
    passages = ["The Broncos won Super Bowl 50.", "Unrelated text.", "Denver   BRONCOS!"]
    assert citation_precision(passages, ["Denver Broncos", "Broncos"]) == pytest.approx(2 / 3)
    assert citation_precision([], ["x"]) is None
    assert citation_precision(["a b c"], [""]) == 0.0  # an empty gold answer supports nothing
    assert citation_precision(["Ünïcödé café"], ["café"]) == 1.0
    assert citation_precision(["the Broncosaurus"], ["Broncos"]) == 0.0  # whole words only


def test_perplexity() -> None:
    assert perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        perplexity([])
