"""Tools from typed functions, schema validation before the call, the calculator (no eval), the allow-list."""

from __future__ import annotations

from typing import Literal

import pytest

from ember.agents.builtins import basic_tools, calculate, current_time
from ember.agents.tools import Tool, Toolbox, ToolError


def convert(amount: float, unit: Literal["km", "mi"], digits: int = 2, tags: list[str] | None = None) -> str:
    """Convert a distance.

    Args:
        amount: how far.
        unit: the unit of `amount`.
        digits: decimals to keep
            in the result.
    """
    return f"{amount}{unit}"


def test_schema_from_type_hints_and_docstring() -> None:
    t = Tool.from_function(convert)
    assert t.name == "convert" and t.description == "Convert a distance."
    props = t.parameters["properties"]
    assert props["amount"] == {"type": "number", "description": "how far."}
    assert props["unit"]["enum"] == ["km", "mi"]
    assert props["digits"] == {"type": "integer", "description": "decimals to keep in the result.", "default": 2}
    assert props["tags"]["anyOf"] == [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
    assert t.parameters["required"] == ["amount", "unit"] and t.parameters["additionalProperties"] is False


def test_arguments_are_validated_before_the_call() -> None:
    called = []
    t = Tool.from_function(lambda n: called.append(n), name="record")  # untyped: any value
    t2 = Tool.from_function(convert)
    assert t2({"amount": 3, "unit": "km"}) == "3km"
    for bad, needle in [({"amount": "3", "unit": "km"}, "amount: '3' is not of type 'number'"),
                        ({"amount": 3, "unit": "parsec"}, "unit: 'parsec' is not one of"),
                        ({"unit": "km"}, "'amount' is a required property"),
                        ({"amount": 1, "unit": "km", "x": 1}, "Additional properties are not allowed"),
                        ([1, 2], "must be a JSON object")]:
        with pytest.raises(ToolError, match=r"invalid arguments|must be a JSON object") as e:
            t2(bad)
        assert needle in str(e.value)
    t({"n": 1})
    assert called == [1]


def test_calculator_parses_arithmetic_without_eval() -> None:
    assert calculate("(16 - 3 - 4) * 2") == "18"
    assert calculate("2^10 + sqrt(16)") == "1028"
    assert calculate("$1,200 / 3") == "400"
    assert calculate("7 / 2") == "3.5"
    for bad in ("__import__('os').system('echo hi')", "open('/etc/passwd')", "x + 1", "2 ** 100000", "1/0", "(1"):
        with pytest.raises(ToolError):
            calculate(bad)


def test_current_time_and_unknown_zone() -> None:
    assert current_time("Asia/Tokyo").endswith("+09:00")
    with pytest.raises(ToolError, match="unknown time zone"):
        current_time("Mars/Olympus")
    assert [t.name for t in basic_tools()] == ["calculator", "current_time"]


def test_mutating_tools_need_the_allow_list() -> None:
    safe = Tool.from_function(calculate, name="calc")
    commit = Tool.from_function(lambda message: message, name="git.git_commit", mutating=True)
    box = Toolbox([safe, commit])
    assert "git.git_commit" not in box and box.refused == ["git.git_commit"]
    with pytest.raises(ToolError, match="not in the allow-list"):
        box.call("git.git_commit", {"message": "x"})
    assert "git.git_commit" in Toolbox([safe, commit], allow=["git.*"])
    with pytest.raises(ToolError, match=r"unknown tool 'nope'\. Available tools: calc"):
        box.call("nope", {})


def test_calculator_runs_a_short_program() -> None:
    """What a code action sends: assignments, comments, `+=`, percent, and the answer's expression last."""
    program = "# 3 boxes of 25\nboxes = 3 * 25\nleft = boxes - 18  # gives 18 away\nleft += 2 * 10\nleft"
    assert calculate(program) == "77"
    assert calculate("cost = 3 * 68; tip = cost * 10%; cost + tip") == "224.4"
    assert calculate("x = 7\ny = x * 2") == "14"  # no last expression: the last assignment's value
    assert calculate("total = 0.1 + 0.2\nprint(total)") == "0.3"  # print(...) last; binary noise rounded off
    assert calculate("max(3, 4) + 1,000") == "1004" and calculate("x = 8\nx % 3") == "2"
    for bad, why in (("x = y + 1", "'y' is not defined"), ("q += 1", "'q' is not defined"),
                     ("for i in range(3):\n    t = i", "not arithmetic"), ("import os", "not arithmetic"),
                     ("sqrt = 4\nsqrt", "function name"), ("a = 1\n" * 41 + "a", "more than 40"),
                     ("x = open('/etc/passwd')", "not arithmetic")):
        with pytest.raises(ToolError, match=why):
            calculate(bad)
