"""Issue 16, no model: `ChatOptions` validation, the prompt rendering of tools and tool-call history, the lark
grammar per tool_choice, and `ToolCallParser` on replies fed in random pieces (streamed == whole)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from ember.model.outputs import Completion, Delta, ToolCallDelta
from ember.model.tool_calls import (
    TOOL_CLOSE,
    TOOL_OPEN,
    ChatOptions,
    ToolCallParser,
    ToolsError,
    bounded,
    lark_grammar,
    parse_stream,
    render_messages,
    tag_rules,
)

ADD = {"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
NOTE = {"type": "function", "function": {"name": "note", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}}}}}


def feed_in_pieces(text: str, seed: int) -> tuple[str, list[ToolCallDelta], ToolCallParser]:
    rng = random.Random(seed)
    parser, content, i = ToolCallParser(), "", 0
    deltas: list[ToolCallDelta] = []
    while i < len(text):
        n = rng.randint(1, 7)
        c, d = parser.feed(text[i:i + n])
        content, deltas, i = content + c, deltas + d, i + n
    c, d = parser.finish()
    return content + c, deltas + d, parser


def assemble(deltas: list[ToolCallDelta]) -> list[tuple[str, str]]:
    calls: dict[int, list[str]] = {}
    for d in deltas:
        entry = calls.setdefault(d.index, ["", ""])
        if d.name is not None:
            assert entry[0] == "" and d.id  # the id and name come once, first
            entry[0] = d.name
        entry[1] += d.arguments
    return [(n, a) for _, (n, a) in sorted(calls.items())]


REPLY = ('Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n'
         '<tool_call>\n{"name": "note", "arguments": {"text": "a \\"quoted\\" } brace"}}\n</tool_call>')


@pytest.mark.parametrize("seed", range(40))
def test_streamed_pieces_reassemble_into_the_calls(seed: int) -> None:
    content, deltas, parser = feed_in_pieces(REPLY, seed)
    assert content == "Let me check."
    expected = [("add", '{"a": 2, "b": 3}'), ("note", '{"text": "a \\"quoted\\" } brace"}')]
    assert [(c.name, c.arguments) for c in parser.calls] == expected == assemble(deltas)
    assert all(c.id.startswith("call_") for c in parser.calls)
    assert len([d for d in deltas if d.arguments]) >= 2  # arguments stream in fragments


def test_text_calls_of_other_shapes_and_broken_blocks() -> None:
    content, deltas, parser = feed_in_pieces('<tool_call>\n{"arguments": {"x": 1}, "name": "f"}\n</tool_call>', 1)
    assert content == "" and [(c.name, c.arguments) for c in parser.calls] == [("f", '{"x": 1}')] == assemble(deltas)
    broken = f"{TOOL_OPEN}\n{{not json}}\n{TOOL_CLOSE} and more"
    content, deltas, parser = feed_in_pieces(broken, 2)
    assert content == broken and not parser.calls and not deltas
    content, _, parser = feed_in_pieces("A <tool but not a call", 3)
    assert content == "A <tool but not a call" and not parser.calls
    _, deltas, parser = feed_in_pieces('<tool_call>\n{"name": "add", "arguments": {"a": 1', 4)  # cut by max_tokens
    assert [(c.name, c.arguments) for c in parser.calls] == [("add", '{"a": 1')] == assemble(deltas)


def test_a_bare_call_object_is_a_call_only_when_it_names_a_tool() -> None:
    rng = random.Random(0)
    for text, names, calls, content in [
            ('{"name": "add", "arguments": {"a": 1, "b": 2}}', {"add"}, [("add", '{"a": 1, "b": 2}')], ""),
            ('{"name": "Paris", "arguments": {"x": 1}}', {"add"}, [], '{"name": "Paris", "arguments": {"x": 1}}'),
            ('{"name": "Paris", "country": "France"}', {"add"}, [], '{"name": "Paris", "country": "France"}'),
            ('Sure: {"name": "add", "arguments": {}}', {"add"}, [], 'Sure: {"name": "add", "arguments": {}}')]:
        parser, got, i = ToolCallParser(names), "", 0
        deltas: list[ToolCallDelta] = []
        while i < len(text):
            n = rng.randint(1, 5)
            c, d = parser.feed(text[i:i + n])
            got, deltas, i = got + c, deltas + d, i + n
        c, d = parser.finish()
        assert [(t.name, t.arguments) for t in parser.calls] == calls == assemble(deltas + d)
        assert got + c == content


def test_parse_stream_sets_the_finish_reason_and_content() -> None:
    options = ChatOptions.from_openai([ADD])
    done = Completion(REPLY, [1, 2, 3], "stop", 10)
    deltas = list(parse_stream(iter([Delta(REPLY[:30], [1]), Delta(REPLY[30:], [2, 3], "stop", done)]), options))
    final = deltas[-1].completion
    assert final is not None and final.finish_reason == "tool_calls" and final.text == "Let me check."
    assert [c.name for c in final.tool_calls] == ["add", "note"]
    assert "".join(d.text for d in deltas) == "Let me check."
    plain = ChatOptions.from_openai([ADD], "none")  # no calls allowed: the text passes as it is
    assert list(parse_stream(iter([Delta(REPLY, [1], "stop", done)]), plain))[-1].completion is done


BAD: list[tuple[dict[str, Any], str]] = [
    ({"tools": [ADD, ADD]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "x y"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools.0.type"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     "tools.0.function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
     "tools.0.function.parameters"),
    ({"tools": [ADD], "tool_choice": "maybe"}, "tool_choice"),
    ({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "mul"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema"),
]


@pytest.mark.parametrize(("fields", "param"), BAD)
def test_malformed_fields_name_the_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ToolsError) as e:
        ChatOptions.from_openai(**fields)
    assert e.value.param == param and str(e.value).startswith(param + ": ")


def test_grammar_per_tool_choice() -> None:
    auto = lark_grammar(ChatOptions.from_openai([ADD, NOTE]))
    assert auto is not None and auto.startswith("start: calls | bare | reply") and 'call ("\\n" call)*' in auto
    assert "TEXT: /[^<{`]" in auto
    named = lark_grammar(ChatOptions.from_openai([ADD, NOTE], {"type": "function", "function": {"name": "note"}}))
    assert named is not None and named.startswith("start: calls | bare\ncalls: call\n")
    assert '"const": "note"' in named and '"const": "add"' not in named
    single = lark_grammar(ChatOptions.from_openai([ADD], "required", parallel_tool_calls=False))
    assert single is not None and "calls: call\n" in single
    assert lark_grammar(ChatOptions.from_openai([ADD], "none")) is None
    fmt = lark_grammar(ChatOptions.from_openai(response_format={"type": "json_object"}))
    assert fmt is not None and fmt.startswith('start: %json {"type": "object"')
    assert bounded({"type": "object", "properties": {"s": {"type": "string"}, "l": {"type": "array"}}}, 50) == {
        "type": "object", "additionalProperties": False,
        "properties": {"s": {"type": "string", "maxLength": 50}, "l": {"type": "array", "maxItems": 16}}}


def test_render_messages_native_and_in_the_system_prompt() -> None:
    options = ChatOptions.from_openai([ADD])
    history = [{"role": "user", "content": "2+3?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "5"}]
    native, tools = render_messages(history, options, native_tools=True)
    assert tools == [ADD] and native[1]["tool_calls"][0]["function"]["arguments"] == {"a": 2, "b": 3}
    assert native[1]["content"] == ""
    text, none = render_messages(history, options, native_tools=False)
    assert none is None and text[0]["role"] == "system" and "<tools>\n" + json.dumps(ADD) in text[0]["content"]
    assert text[2] == {"role": "assistant",
                       "content": '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'}
    assert text[3] == {"role": "user", "content": "<tool_response>\n5\n</tool_response>"}
    unoffered, _ = render_messages(history[:1], ChatOptions.from_openai([ADD], "none"), native_tools=False)
    assert unoffered == history[:1]


def test_tool_tags_are_named_by_id_when_the_vocabulary_has_them() -> None:
    class Vocab:
        def __init__(self, ids: dict[str, int]) -> None:
            self.ids = ids

        def token_to_id(self, token: str) -> int | None:
            return self.ids.get(token)

    class Tok:
        def __init__(self, ids: dict[str, int]) -> None:
            self.backend = Vocab(ids)

    qwen = Tok({TOOL_OPEN: 151657, TOOL_CLOSE: 151658})
    assert tag_rules(qwen) == ("<[151657]>", "<[151658]>")
    assert tag_rules(Tok({})) == (f'"{TOOL_OPEN}"', f'"{TOOL_CLOSE}"')
    grammar = lark_grammar(ChatOptions.from_openai([ADD], "required"), tag_rules(qwen))
    assert grammar is not None and 'call: <[151657]> "\\n" %json' in grammar and '"\\n" <[151658]>\n' in grammar
