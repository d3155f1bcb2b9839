"""Built-in tools: a calculator (parsed with `ast`, never `eval`), the current time, and collection search/read."""

from __future__ import annotations

import ast
import math
import operator
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ember.agents.tools import Tool, ToolError

_BINARY: dict[type, Any] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                            ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
                            ast.Pow: operator.pow}
_UNARY: dict[type, Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Any] = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max,
                          "floor": math.floor, "ceil": math.ceil, "log": math.log, "exp": math.exp}
_CONSTS = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 10_000
MAX_INT_BITS = 14_300  # ~4,300 digits, Python's own limit for printing an int: bigger results are refused
MAX_EXPRESSION = 1_000  # characters


def _eval(node: ast.AST, names: dict[str, Any] | None = None) -> Any:
    """The value of an arithmetic expression; `names`: the variables a program has assigned so far."""
    names = _CONSTS if names is None else names
    if isinstance(node, ast.Expression):
        return _eval(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Name) and node.id not in _FUNCS:
        raise ToolError(f"{node.id!r} is not defined: assign it first (`{node.id} = ...`)")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, names), _eval(node.right, names)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent {right} is too large")
        _check_size(node.op, left, right)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, names))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords):
        return _FUNCS[node.func.id](*(_eval(a, names) for a in node.args))
    raise ToolError(f"not arithmetic: {ast.unparse(node)!r} (use numbers, + - * / // % **, parentheses, "
                    f"{', '.join(_FUNCS)})")


def _check_size(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse, before computing it, an integer result of more than MAX_INT_BITS bits: `(10**10000)**10000` has
    a small exponent but 332 million bits, and computing it takes minutes (a document could stall an agent)."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return  # floats overflow to an OverflowError on their own, fast
    a, b = abs(left).bit_length(), abs(right).bit_length()
    if isinstance(op, ast.Pow):
        bits = a * right if right > 0 and abs(left) > 1 else 0
    elif isinstance(op, ast.Mult):
        bits = a + b
    else:
        bits = max(a, b) + 1
    if bits > MAX_INT_BITS:
        raise ToolError(f"the result would have about {int(bits * 0.30103):,} digits; at most "
                        f"{int(MAX_INT_BITS * 0.30103):,} are computed")


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression, e.g. "(16 - 3 - 4) * 2".

    Args:
        expression: numbers with + - * / // % ** and parentheses; sqrt, abs, round, min, max, floor, ceil.
    """
    # Also a short program, as an agent's code action sends it (`_run`): assignments `name = expression` (or
    # `+=` ...), one per line or ";", comments, and the answer's expression (or `print(...)`) last; "20%" is 20 / 100.
    text = _THOUSANDS.sub("", expression.strip().replace("^", "**").replace("$", ""))  # 1,000 -> 1000
    text = _PERCENT.sub(r"(\1 / 100)", text)
    if len(text) > MAX_EXPRESSION:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as e:
        raise ToolError(f"cannot parse {expression!r} as arithmetic: {e.msg}") from None
    try:
        value = _run(tree.body)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as e:
        raise ToolError(f"cannot compute {expression!r}: {e}") from None
    if isinstance(value, float):  # 20.400000000000002 -> 20.4: binary fractions are noise to a reader
        value = int(value) if value.is_integer() and abs(value) < 1e15 else float(f"{value:.12g}")
    return str(value)


MAX_STATEMENTS = 40
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%(?!\s*[\w(.])")  # "20%" and "20% * x" are percent; "20 % 3" is modulo


def _run(body: list[ast.stmt]) -> Any:
    """A program's value: assignments (`name = expression`) in order, then the last statement's value (an
    expression, `print(expression)`, or the last assignment's value)."""
    if not body:
        raise ToolError("nothing to compute")
    if len(body) > MAX_STATEMENTS:
        raise ToolError(f"more than {MAX_STATEMENTS} steps in one program")
    names: dict[str, Any] = dict(_CONSTS)
    value: Any = None
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            if target in _FUNCS:
                raise ToolError(f"{target!r} is a function name; call the variable something else")
            value = names[target] = _eval(node.value, names)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and type(node.op) in _BINARY:
            op = ast.BinOp(ast.Name(node.target.id, ast.Load()), node.op, node.value)  # total += 3
            value = names[node.target.id] = _eval(op, names)
        elif isinstance(node, ast.Expr):
            inner = node.value
            if (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id == "print"
                    and len(inner.args) == 1 and not inner.keywords):
                inner = inner.args[0]
            value = _eval(inner, names)
        else:
            raise ToolError(f"not arithmetic: {ast.unparse(node)!r} (a program is `name = expression` lines and "
                            f"a last expression)")
    return value


def current_time(timezone: str = "UTC") -> str:
    """The current date and time in a time zone.

    Args:
        timezone: an IANA time zone name such as "Europe/Paris" (default UTC).
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r} (use an IANA name such as 'America/New_York')") from None
    return datetime.now(zone).isoformat(timespec="seconds")


# What a call's arithmetic expression may contain: the grammar holds a model to it (a small model otherwise writes
# English or runs on with digits inside the string); validation of the call checks it too. Programs (variables,
# several lines) come as code actions, which the agent hands to `calculate` without this schema.
EXPRESSION_PATTERN = r"^[0-9 .,+\-*/%()^a-z]{1,120}$"


def calculator_tool() -> Tool:
    t = Tool.from_function(calculate, name="calculator")
    t.parameters["properties"]["expression"].update(pattern=EXPRESSION_PATTERN, maxLength=120)
    return Tool(t.name, t.description, t.parameters, t.fn)  # validator rebuilt from the stricter schema


def basic_tools() -> list[Tool]:
    return [calculator_tool(), Tool.from_function(current_time)]


def collection_tools(retriever: Any, max_chars: int = 1500) -> list[Tool]:
    """search_collection and read_document over one collection (`retriever`: an ember.retrieval Retriever)."""
    collection = retriever.collection

    def search_collection(query: str, k: int = 3) -> str:
        """Search the document collection; returns the best matching passages with their source.

        Args:
            query: what to look for, in a few words.
            k: how many passages to return (1-10).
        """
        hits = retriever.search(query, k=max(1, min(int(k), 10)))
        if not hits:
            return "No results."
        return "\n\n".join(f"[{h.rank}] {h.chunk.title or h.chunk.source} (chunk {h.chunk.id}):\n"
                           f"{h.chunk.text[:max_chars]}" for h in hits)

    def read_document(title: str) -> str:
        """Read the start of one document of the collection, by its title or source path.

        Args:
            title: the document's title or source, as shown by search_collection.
        """
        collection.refresh()
        docs = collection.documents()
        doc = next((d for d in docs.values() if title in (d.title, d.source)), None)
        if doc is None:
            doc = next((d for d in docs.values() if title.lower() in d.title.lower()), None)
        if doc is None:
            raise ToolError(f"no document titled {title!r}")
        text = "\n".join(c.text for c in collection.document_chunks(doc.id))
        return text[:max_chars * 2] + ("…" if len(text) > max_chars * 2 else "")

    return [Tool.from_function(search_collection), Tool.from_function(read_document)]
