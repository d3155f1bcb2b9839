"""Tool-call grammars (llguidance) on the real SmolLM2 tokenizer: the mask admits exactly the grammar's
continuations, and even random logits decode into calls that parse and validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ember.agents.builtins import EXPRESSION_PATTERN, basic_tools
from ember.agents.grammar import GrammarError, ToolGrammar, call_schema, lark_grammar
from ember.agents.parsing import parse_reply
from ember.agents.tools import Tool
from ember.model.tokenizer import Tokenizer

EOS = 2  # <|im_end|>


def convert(source_timezone: str, time: str, target_timezone: str) -> str:
    """Convert a time between zones."""
    return time


@pytest.fixture(scope="module")
def tokenizer(smollm2_folder: Path) -> Tokenizer:
    return Tokenizer.load(smollm2_folder)


def tools() -> list[Tool]:
    return [*basic_tools(), Tool.from_function(convert)]


def test_grammar_from_the_tools_schemas() -> None:
    schema = call_schema(tools())
    names = [o["properties"]["name"]["const"] for o in schema["anyOf"]]
    assert names == ["calculator", "current_time", "convert"]
    expression = schema["anyOf"][0]["properties"]["arguments"]["properties"]["expression"]
    assert expression["maxLength"] == 120 and expression["type"] == "string"
    assert expression["pattern"] == EXPRESSION_PATTERN  # the calculator takes arithmetic, not English
    assert lark_grammar(tools(), "react").startswith('start: "Thought: " THOUGHT')
    with pytest.raises(GrammarError, match="no tools"):
        call_schema([])


def decode(grammar: ToolGrammar, tokenizer: Tokenizer, seed: int, limit: int = 200) -> tuple[str, bool]:
    """Generate with random logits under the grammar (a 'model' that knows nothing): (text, ended at EOS)."""
    gen = torch.Generator().manual_seed(seed)
    proc = grammar.processor()
    out: list[int] = []
    for _ in range(limit):
        logits = torch.randn(49152, generator=gen) * 5
        token = int(proc(out, logits).argmax())
        if token == EOS:
            return tokenizer.decode(out), True
        out.append(token)
    return tokenizer.decode(out), False


def test_random_logits_decode_to_valid_calls(tokenizer: Tokenizer) -> None:
    box = {t.name: t for t in tools()}
    grammar = ToolGrammar(tools(), tokenizer, 49152, [EOS], mode="call")
    for seed in range(4):
        text, ended = decode(grammar, tokenizer, seed)
        assert ended, text
        call = json.loads(text)
        assert box[call["name"]].validate(call["arguments"]) == call["arguments"]


def test_react_grammar_gives_a_thought_and_an_action_or_answer(tokenizer: Tokenizer) -> None:
    grammar = ToolGrammar(tools(), tokenizer, 49152, [EOS], mode="react")
    for seed in range(3):
        text, ended = decode(grammar, tokenizer, seed, limit=160)
        assert text.startswith("Thought: ") and "\n" in text
        if ended:  # random text rarely stops early; when it does, the reply is an action or an answer
            assert parse_reply(text).kind in ("action", "final"), text
        else:
            assert text.split("\n", 1)[1].startswith(("Action: {", "Final Answer: ")), text


def test_final_only_grammar_holds_the_reply_to_an_answer(tokenizer: Tokenizer) -> None:
    grammar = ToolGrammar(tools(), tokenizer, 49152, [EOS], mode="react")
    gen = torch.Generator().manual_seed(0)
    proc = grammar.processor(final_only=True)
    out: list[int] = []
    for _ in range(40):  # random logits: whatever the "model" prefers, the reply is the fixed thought + an answer
        token = int(proc(out, torch.randn(49152, generator=gen) * 5).argmax())
        if token == EOS:
            break
        out.append(token)
    text = tokenizer.decode(out)
    assert text.startswith("Thought: The observation answers the question.\nFinal Answer: "), text
    assert "Action:" not in lark_grammar(tools(), "final")


def test_mask_admits_the_grammar_and_nothing_else(tokenizer: Tokenizer) -> None:
    grammar = ToolGrammar(tools(), tokenizer, 49152, [EOS], mode="call")
    proc = grammar.processor()
    ids = tokenizer.encode('{"name": "calculator", "arguments": {"expression": "6*7"}}', add_special_tokens=False)
    for i, token in enumerate(ids):
        allowed = torch.isfinite(proc(ids[:i], torch.zeros(49152)))
        assert allowed[token] and not allowed[EOS] and allowed.sum() < 49152
    final = torch.isfinite(proc(ids, torch.zeros(49152)))
    assert final[EOS] and final.sum() == 1  # a complete call: only the end of the reply
    with pytest.raises(GrammarError, match="matcher failed"):  # tokens the mask forbade: a bug upstream
        grammar.processor()(tokenizer.encode('{"name": "weather"', add_special_tokens=False), torch.zeros(49152))


def test_calculator_refuses_english_before_it_runs() -> None:
    from ember.agents.builtins import calculator_tool
    from ember.agents.tools import ToolError

    calc = calculator_tool()
    assert calc.validate({"expression": "12.5 * 8 + 3"}) == {"expression": "12.5 * 8 + 3"}
    with pytest.raises(ToolError):
        calc.validate({"expression": "Twelve point five times eight"})


def test_code_action_grammar_admits_one_python_block(tokenizer: Tokenizer) -> None:
    """The native tools grammar with `code_block`: a whole ```python block is a reply, and then only the end."""
    from ember.model.grammar import GrammarProcessor, compile_lark
    from ember.model.tool_calls import ChatOptions, FunctionSpec
    from ember.model.tool_calls import lark_grammar as tools_lark

    spec = FunctionSpec("calculator", "arithmetic", {"type": "object", "properties": {
        "expression": {"type": "string"}}, "required": ["expression"]})
    plain = tools_lark(ChatOptions((spec,), "required", parallel_tool_calls=False))
    lark = tools_lark(ChatOptions((spec,), "required", parallel_tool_calls=False, code_block=True))
    assert plain is not None and "code" not in plain and lark is not None and "| code" in lark
    named = tools_lark(ChatOptions((spec,), "calculator", code_block=True))
    assert named is not None and "code" not in named  # a forced call stays a call
    grammar, tok = compile_lark(lark, tokenizer, 49152, (EOS,), "test")
    ids = tokenizer.encode("```python\n# two steps\nx = 6\nx * 7\n```", add_special_tokens=False)
    proc = GrammarProcessor.of(grammar, tok, 49152)
    for i, token in enumerate(ids):
        assert torch.isfinite(proc(ids[:i], torch.zeros(49152)))[token], tokenizer.decode(ids[:i + 1])
    assert torch.isfinite(proc(ids, torch.zeros(49152))).sum() == 1  # the block closed: only the end of the reply
