"""Tool-call grammars for constrained decoding on our engine, built with llguidance from the tools' schemas.

The grammar is the agent's output format: one `Thought:` line, then either `Action: {"name": ..., "arguments":
{...}}` where the JSON is one of the tools' call schemas (name fixed, arguments per the tool's JSON schema),
or `Final Answer: ...`. Mode "call" is the JSON call alone; mode "final" is the fixed Thought "The observation answers
the question." and a free Final Answer (what the agent asks for once the model repeats a call whose result it
already has). `GrammarProcessor`
(`ember.model.grammar`, shared with the OpenAI API's tool calls) is the `LogitsProcessor` that enforces it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any, Literal

from ember.agents.tools import Json, Tool
from ember.model.grammar import GrammarError, GrammarProcessor, ll_tokenizer
from ember.model.grammar import llg as _llg

__all__ = ["GrammarError", "GrammarProcessor", "ToolGrammar", "call_schema", "lark_grammar", "ll_tokenizer"]

Mode = Literal["react", "call", "final"]
MAX_STRING = 100  # strings in a call are capped in the grammar so a rambling model cannot fill max_tokens
FINAL_THOUGHT = "The observation answers the question."  # the system prompt's example uses the same words
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _bounded(schema: Any) -> Any:
    """A stricter copy of `schema` for the grammar (validation is unchanged): strings without maxLength get
    MAX_STRING, and objects that list their properties admit no others unless they say so."""
    if isinstance(schema, dict):
        out = {k: _bounded(v) for k, v in schema.items()}
        if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
            out["additionalProperties"] = False
        if out.get("type") == "string" and "maxLength" not in out and "enum" not in out and "const" not in out:
            out["maxLength"] = MAX_STRING
        return out
    if isinstance(schema, list):
        return [_bounded(v) for v in schema]
    return schema


def call_schema(tools: Iterable[Tool]) -> Json:
    """JSON schema of one call to any of `tools`: {"name": <const>, "arguments": <that tool's schema>}."""
    options = []
    for t in tools:
        args = _bounded(copy.deepcopy(t.parameters))
        args.pop("title", None)
        options.append({"type": "object", "properties": {"name": {"const": t.name}, "arguments": args},
                        "required": ["name", "arguments"], "additionalProperties": False})
    if not options:
        raise GrammarError("no tools to build a tool-call grammar from")
    return {"anyOf": options, "x-guidance": JSON_STYLE}


def lark_grammar(tools: Iterable[Tool], mode: Mode = "react") -> str:
    call = "%json " + json.dumps(call_schema(tools))
    if mode == "call":
        return f"start: {call}\n"
    final = 'final: "Final Answer: " /(.|\\n){1,4000}/\n'
    if mode == "final":
        return f'start: "Thought: {FINAL_THOUGHT}\\n" final\n' + final
    return (f'start: "Thought: " THOUGHT "\\n" (action | final)\n'
            f'THOUGHT: /[^\\n]{{1,200}}/\n'
            f'action: "Action: " {call}\n' + final)


class ToolGrammar:
    """A compiled grammar for a set of tools; `processor()` makes a fresh per-request matcher. In mode "react",
    `processor(final_only=True)` uses the "final" grammar instead (compiled on first use)."""

    def __init__(self, tools: Iterable[Tool], tokenizer: Any, vocab_size: int, eos_ids: Iterable[int],
                 mode: Mode = "react") -> None:
        llg = _llg()
        self.tools, self.mode = list(tools), mode
        self.ll_tokenizer = ll_tokenizer(tokenizer, vocab_size, eos_ids)
        self.grammar = llg.LLMatcher.grammar_from_lark(lark_grammar(self.tools, mode))
        failed, messages = llg.LLMatcher.validate_grammar_with_warnings(self.grammar, self.ll_tokenizer)
        if failed:
            raise GrammarError(f"cannot build a tool-call grammar: {messages[0]}")
        self.vocab_size = vocab_size
        self._final: Any = None

    def processor(self, final_only: bool = False) -> GrammarProcessor:
        grammar = self.grammar
        if final_only:
            if self._final is None:
                self._final = _llg().LLMatcher.grammar_from_lark(lark_grammar(self.tools, "final"))
            grammar = self._final
        return GrammarProcessor(_llg().LLMatcher(self.ll_tokenizer, grammar), self.vocab_size)
