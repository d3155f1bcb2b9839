"""The tolerant reply parser: what small models actually write."""

from __future__ import annotations

import pytest

from ember.agents.parsing import parse_reply


@pytest.mark.parametrize("text, tool, args", [
    ('Thought: add\nAction: {"name": "calc", "arguments": {"expression": "1+1"}}', "calc", {"expression": "1+1"}),
    ('Thought: x\nAction:\n```json\n{"name": "calc", "arguments": {"expression": "2"}}\n```\nI hope this helps!',
     "calc", {"expression": "2"}),
    ("Action: {'name': 'calc', 'arguments': {'expression': '3', 'exact': True}} and then more text",
     "calc", {"expression": "3", "exact": True}),
    ('Thought: t\nAction: calc\nAction Input: {"expression": "4"}', "calc", {"expression": "4"}),
    ('<tool_call>\n{"name": "calc", "arguments": {"expression": "5"}}\n</tool_call>', "calc", {"expression": "5"}),
    ('Action: {"tool": "calc", "tool_input": {"expression": "6 } {"}}', "calc", {"expression": "6 } {"}),
    ('Action: {"function": {"name": "calc", "arguments": "{\\"expression\\": \\"7\\"}"}}', "calc",
     {"expression": "7"}),
])
def test_actions(text: str, tool: str, args: dict) -> None:
    p = parse_reply(text)
    assert (p.kind, p.tool, p.arguments) == ("action", tool, args)


def test_final_answer_and_thought() -> None:
    p = parse_reply("Thought: I know it.\nFinal Answer: 42 apples\nsecond line")
    assert (p.kind, p.thought, p.answer) == ("final", "I know it.", "42 apples\nsecond line")


@pytest.mark.parametrize("text", ["I think the answer is 4.", "Action: call the calculator please",
                                  'Action: {"arguments": {"x": 1}}', ""])
def test_malformed(text: str) -> None:
    p = parse_reply(text)
    assert p.kind == "malformed" and p.error
