"""`Tool`: a name, a description and a JSON-schema for its arguments, plus the function that runs it.

Python functions become tools from their type hints and docstrings (`Tool.from_function`), MCP servers'
tools are wrapped by `ember.agents.mcp_client`. Arguments are validated against the schema before the call,
so a model's bad arguments come back as an observation instead of reaching the function.

Error policy (smolagents'): errors the model caused (`ToolError`: unknown tool, bad arguments, a tool that
failed on its input) become observations; bugs in our own code raise.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from ember.model.errors import ConfigError, EmberError, InvalidValueError

Json = dict[str, Any]


class ToolError(EmberError):
    """A tool call the model got wrong or that failed: reported back to the model as an observation."""


_PRIMITIVES: dict[Any, Json] = {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"},
                                bool: {"type": "boolean"}, type(None): {"type": "null"}}


def schema_of(hint: Any) -> Json:
    """JSON schema of a type hint: primitives, list[...], dict[str, ...], Literal[...], X | None."""
    if hint in _PRIMITIVES:
        return dict(_PRIMITIVES[hint])
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset):
        return {"type": "array", "items": schema_of(args[0])} if args else {"type": "array"}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(args[1])} if args else {"type": "object"}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [schema_of(a) for a in args]}
    if hint is Any or hint is inspect.Parameter.empty:
        return {}
    raise TypeError(f"no JSON schema for type {hint!r}")


_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(summary, {param: description}) from a Google-style docstring (`Args:` section)."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section, current = "summary", None
    for line in lines:
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section = "args"
            continue
        if stripped.endswith(":") and stripped[:-1] in ("Returns", "Raises", "Yields", "Examples", "Example"):
            section = "other"
            continue
        if section == "summary":
            summary.append(stripped)
        elif section == "args":
            m = _ARG_LINE.match(line)
            if m and (not line.startswith(" " * 8) or current is None):
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current and stripped:
                params[current] += " " + stripped
    return " ".join(s for s in summary if s).strip(), params


@dataclass(slots=True)
class Tool:
    name: str
    description: str
    parameters: Json  # a JSON schema of type "object"
    fn: Callable[..., Any]
    mutating: bool = False  # can change something outside the agent: needs an explicit allow-list entry
    output_schema: Json | None = None
    origin: str = ""  # the MCP server it comes from; the allow-list also matches "origin.name"
    _validator: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", self.name):
            raise InvalidValueError(f"tool name {self.name!r} must be 1-128 letters, digits, '_', '-' or '.'")
        if self.parameters.get("type", "object") != "object":
            raise InvalidValueError(f"tool {self.name}: parameters must be a JSON schema of type 'object'")
        cls = jsonschema.validators.validator_for(self.parameters, default=jsonschema.Draft202012Validator)
        cls.check_schema(self.parameters)
        self._validator = cls(self.parameters)

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                      mutating: bool = False) -> Tool:
        """A tool from a typed function; its docstring gives the description and the `Args:` descriptions."""
        summary, docs = parse_docstring(fn.__doc__)
        hints = typing.get_type_hints(fn)
        props: Json = {}
        required: list[str] = []
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{fn.__name__}: *args/**kwargs cannot become a tool schema")
            prop = schema_of(hints.get(p.name, Any))
            if p.name in docs:
                prop["description"] = docs[p.name]
            if p.default is p.empty:
                required.append(p.name)
            else:
                prop["default"] = p.default
            props[p.name] = prop
        params: Json = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
        return cls(name or fn.__name__, description or summary or fn.__name__, params, fn, mutating)

    def validate(self, arguments: Any) -> Json:
        """The arguments if they satisfy the schema; otherwise a `ToolError` naming every problem."""
        if not isinstance(arguments, dict):
            raise ToolError(f"{self.name}: arguments must be a JSON object, got {type(arguments).__name__}")
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            problems = "; ".join(f"{'.'.join(map(str, e.path)) or '(arguments)'}: {e.message}" for e in errors)
            raise ToolError(f"invalid arguments for {self.name}: {problems}")
        return arguments

    def __call__(self, arguments: Json) -> Any:
        return self.fn(**self.validate(arguments))

    def spec(self) -> Json:
        """The OpenAI / chat-template function spec."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         mutating: bool = False) -> Any:
    """Decorator form of `Tool.from_function`."""
    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(f, name=name, mutating=mutating)
    return wrap(fn) if fn is not None else wrap


class Toolbox:
    """The tools one agent may use. Mutating tools are refused unless their name is in `allow`."""

    def __init__(self, tools: Iterable[Tool], allow: Iterable[str] = ()) -> None:
        self.allow = set(allow)
        self.tools: dict[str, Tool] = {}
        self.refused: list[str] = []
        for t in tools:
            if t.name in self.tools:
                raise ConfigError(f"two tools are named {t.name!r}", hint="Rename one of the MCP servers.")
            if t.mutating and not self._allowed(t.name, t.origin):
                self.refused.append(t.name)
                continue
            self.tools[t.name] = t

    def _allowed(self, name: str, origin: str) -> bool:
        import fnmatch

        names = [name, f"{origin}.{name}"] if origin else [name]
        return any(fnmatch.fnmatchcase(n, pattern) for pattern in self.allow for n in names)

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def __getitem__(self, name: str) -> Tool:
        return self.tools[name]

    def __iter__(self) -> typing.Iterator[Tool]:
        return iter(self.tools.values())

    def __len__(self) -> int:
        return len(self.tools)

    def call(self, name: str, arguments: Any) -> Any:
        if name not in self.tools:
            hint = f"; {name} can change things and is not in the allow-list" if name in self.refused else ""
            raise ToolError(f"unknown tool {name!r}{hint}. Available tools: {', '.join(self.tools) or 'none'}")
        return self.tools[name](arguments)
