"""A tolerant parser for the model's replies: Thought / Action (a JSON tool call) / Final Answer.

Accepts what small models actually write: the JSON in a code fence or a `<tool_call>` tag, text after
the JSON, single quotes and Python literals (`True`, `None`), the classic `Action: name` + `Action Input:
{...}` pair, and `args` / `parameters` / `tool_input` for the arguments. It never evaluates code
(`ast.literal_eval` only reads literals).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

FINAL = re.compile(r"final\s*answer\s*:", re.IGNORECASE)
ACTION = re.compile(r"^\s*action\s*:", re.IGNORECASE | re.MULTILINE)
ACTION_INPUT = re.compile(r"^\s*action\s*input\s*:", re.IGNORECASE | re.MULTILINE)
THOUGHT = re.compile(r"^\s*thought\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
FENCE = re.compile(r"```(?:json|JSON|python)?\s*\n?(.*?)```", re.DOTALL)
NAME_KEYS = ("name", "tool", "tool_name", "function", "action")
ARG_KEYS = ("arguments", "args", "parameters", "params", "tool_input", "input", "action_input")


@dataclass(slots=True)
class Parsed:
    kind: Literal["action", "final", "malformed"]
    thought: str = ""
    tool: str | None = None
    arguments: Any = None
    answer: str | None = None
    error: str | None = None
    code: bool = False  # a code action: `arguments["expression"]` is a ```python block's code, for the calculator


def first_object(text: str) -> tuple[str, int] | None:
    """The first balanced {...} in text (braces inside strings ignored) and where it ends."""
    start = text.find("{")
    while start != -1:
        depth, quote, escape = 0, "", False
        for i in range(start, len(text)):
            ch = text[i]
            if quote:
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i + 1], i + 1
        start = text.find("{", start + 1)
    return None


def loads(text: str) -> Any:
    """JSON, else a Python literal (single quotes, True/False/None), else None."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text.replace("'", '"'))
    except json.JSONDecodeError:
        return None


def extract_object(text: str) -> Any:
    for fenced in FENCE.findall(text):
        found = first_object(fenced)
        if found and (value := loads(found[0])) is not None:
            return value
    found = first_object(text)
    return loads(found[0]) if found else None


def as_call(obj: Any) -> tuple[str, Any] | None:
    """(tool name, arguments) from a call object, tolerating the usual key spellings."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # OpenAI-style {"function": {"name", "arguments"}}
        obj = obj["function"]
    name = next((obj[k] for k in NAME_KEYS if isinstance(obj.get(k), str)), None)
    if name is None:
        return None
    args: Any = next((obj[k] for k in ARG_KEYS if k in obj), {})
    if isinstance(args, str):  # arguments as a JSON string (OpenAI wire format)
        args = loads(args) if args.strip() else {}
    return name.strip(), args


def parse_reply(text: str) -> Parsed:
    thought_match = THOUGHT.search(text)
    thought = thought_match.group(1).strip() if thought_match else ""
    action = ACTION.search(text)
    final = FINAL.search(text)
    if final and (action is None or final.start() < action.start()):
        return Parsed("final", thought, answer=text[final.end():].strip())
    if action is not None:
        rest = text[action.end():]
        inp = ACTION_INPUT.search(rest)
        if inp is not None:  # Action: tool_name / Action Input: {...}
            name = rest[:inp.start()].strip().strip("`\"'")
            obj = extract_object(rest[inp.end():])
            if name and (obj is not None or not rest[inp.end():].strip()):
                return Parsed("action", thought, tool=name, arguments=obj if obj is not None else {})
        call = as_call(extract_object(rest))
        if call is not None:
            return Parsed("action", thought, tool=call[0], arguments=call[1])
        return Parsed("malformed", thought, error="the Action is not a JSON object with \"name\" and \"arguments\"")
    call = as_call(extract_object(text))  # a bare call, a fenced one, or <tool_call>{...}</tool_call>
    if call is not None:
        return Parsed("action", thought, tool=call[0], arguments=call[1])
    return Parsed("malformed", thought, error="no Action and no Final Answer")
