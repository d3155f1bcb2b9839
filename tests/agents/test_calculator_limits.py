"""Issue 18: the calculator refuses, fast, arithmetic whose result is too big to compute (a document in the
context can tell an agent to run `(10**10000)**10000`, which took minutes), through the real tool call."""

from __future__ import annotations

import time

import pytest

from ember.agents.builtins import MAX_EXPRESSION, basic_tools, calculate
from ember.agents.tools import ToolError


@pytest.mark.parametrize("expression", ["(10**10000)**10000", "(2**10000)**9999", "(10**9999) * (10**9999)",
                                        "9**10000 * 9**10000 * 9**10000", "(10**4000)**4", "(-7**5000)**3",
                                        "2**10000 * 2**10000 + 1"])
def test_huge_integer_results_are_refused_fast(expression: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ToolError, match="digits"):
        calculate(expression)
    assert time.perf_counter() - start < 0.5


def test_big_but_bounded_arithmetic_still_works() -> None:
    assert calculate("2**100") == str(2**100)
    assert calculate("(10**100)**10") == str(10**1000)
    assert calculate("1**10000") == "1" and calculate("(-1)**9999") == "-1" and calculate("0**9999") == "0"
    assert calculate("10.0**300 * 10") == str(1e301)
    assert calculate("2**-3") == "0.125"
    with pytest.raises(ToolError, match="cannot compute"):
        calculate("10.0**400")  # floats overflow on their own, at once
    with pytest.raises(ToolError, match="longer than"):
        calculate("1+" * MAX_EXPRESSION + "1")


def test_the_agent_tool_answers_with_an_error_not_a_stall() -> None:
    calculator = next(t for t in basic_tools() if t.name == "calculator")
    start = time.perf_counter()
    with pytest.raises(ToolError, match="digits"):
        calculator({"expression": "(10**10000)**10000"})
    assert time.perf_counter() - start < 0.5
