"""The ReAct loop with a scripted backend: each error path ends in an observation or a clear final status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ember.agents.builtins import basic_tools
from ember.agents.react import Agent, AgentConfig
from ember.agents.tools import Tool
from ember.agents.trace import Step, Trace
from ember.model import prompts
from ember.model.backends.base import Capabilities
from tests.scripted import ScriptedBackend


def call(name: str, **args: object) -> str:
    return f"Thought: use {name}\nAction: {json.dumps({'name': name, 'arguments': args})}"


def run(replies: list[Any], tools: list[Tool] | None = None, **config: object) -> tuple[Trace, ScriptedBackend]:
    backend = ScriptedBackend(replies)
    agent = Agent(backend, tools if tools is not None else basic_tools(), AgentConfig(**config))
    return agent.run("How much is (3 + 4) * 6, and what is the UTC offset in Tokyo?"), backend


def test_scripted_multi_step_run_and_trace(tmp_path: Path) -> None:
    seen: list[Step] = []
    backend = ScriptedBackend([call("calculator", expression="(3 + 4) * 6"),
                               call("current_time", timezone="Asia/Tokyo"),
                               "Thought: done\nFinal Answer: 42, and Tokyo is UTC+09:00"])
    agent = Agent(backend, basic_tools(), AgentConfig(max_steps=5))
    assert agent.format == "react" and not agent.constrained  # not our engine: no grammar
    trace = agent.run("How much is (3 + 4) * 6, and what is the UTC offset in Tokyo?", on_step=seen.append)
    assert trace.status == "answered" and trace.answer == "42, and Tokyo is UTC+09:00"
    assert [s.tool for s in trace.steps] == ["calculator", "current_time", None] and seen == trace.steps
    assert trace.steps[0].observation == "42" and trace.steps[1].observation.endswith("+09:00")
    # the model saw the observation of each call
    assert backend.calls[1][-1] == {"role": "user", "content": trace.messages[3]["content"]}
    assert backend.calls[1][-1]["content"].startswith("Observation: 42\n")
    assert len(trace.messages) == 2 + 2 + 2 + 1 and trace.prompt_tokens > 0 and trace.completion_tokens > 0
    assert all(s.llm_s >= 0 and s.tool_s >= 0 for s in trace.steps)
    path = tmp_path / "runs" / "trace.json"
    trace.save(path)
    again = Trace.load(path)
    assert again.steps == trace.steps and again.status == "answered" and again.messages == trace.messages
    assert json.loads(path.read_text())["completion_tokens"] == trace.completion_tokens
    assert "Status: answered" in trace.render() and "Action: calculator" in trace.render()


def test_malformed_output_gets_one_corrective_observation() -> None:
    trace, backend = run(["I think it is 42.", call("calculator", expression="6*7"), "Final Answer: 42"])
    assert trace.status == "answered" and trace.parse_failures == 1
    assert trace.steps[0].error == "parse" and "could not be parsed" in backend.calls[1][-1]["content"]
    trace, _ = run(["I think it is 42.", "Still no format."])
    assert trace.status == "parse_error" and len(trace.steps) == 2


def test_unknown_tool_and_bad_arguments_become_observations() -> None:
    trace, backend = run([call("weather", city="Paris"), call("calculator", expr="1+1"),
                          "Final Answer: none"])
    assert trace.status == "answered"
    assert trace.steps[0].error == "unknown_tool"
    assert "unknown tool 'weather'. Available tools: calculator, current_time" in trace.steps[0].observation
    assert trace.steps[1].error == "invalid_arguments" and "'expression' is a required property" in \
        trace.steps[1].observation
    assert "unknown tool" in backend.calls[1][-1]["content"]


def test_tool_exception_becomes_an_observation() -> None:
    def flaky(path: str) -> str:
        """Read a file."""
        raise OSError(f"disk on fire reading {path}")

    trace, _ = run([call("flaky", path="a.txt"), "Final Answer: could not read it"], [Tool.from_function(flaky)])
    assert trace.status == "answered" and trace.steps[0].error == "tool_error"
    assert trace.steps[0].observation == "Error: flaky raised OSError: disk on fire reading a.txt"


def test_step_cap() -> None:
    replies = [call("calculator", expression=f"{i} + 1") for i in range(10)]
    trace, backend = run(replies, max_steps=3)
    assert trace.status == "max_steps" and len(trace.steps) == 3 and len(backend.calls) == 3
    assert trace.answer is None and "3 steps" in trace.detail


def test_repeated_identical_call_ends_the_loop() -> None:
    trace, _backend = run([call("calculator", expression="6*7")], max_steps=10)
    assert trace.status == "repeated_call" and len(trace.steps) == 3
    assert trace.steps[1].error == "repeated" and "You already called calculator" in trace.steps[1].observation
    assert "called 3 times" in trace.detail


def test_wall_clock_cap() -> None:
    backend = ScriptedBackend([call("calculator", expression=f"{i}") for i in range(20)], delay_s=0.05)
    agent = Agent(backend, basic_tools(), AgentConfig(max_steps=20, max_seconds=0.12))
    trace = agent.run("count")
    assert trace.status == "timeout" and 2 <= len(trace.steps) < 20


TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {% for t in tools %}{{ t.function.name }} {% endfor %}<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class ScriptedNativeBackend(ScriptedBackend):
    """A scripted backend whose tokenizer's chat template takes `tools` and which returns tool calls (as our
    engine does: the template renders the tools, the reply is read by the real `ToolCallParser`)."""

    def __init__(self, replies: list[Any], tokenizer: Any) -> None:
        super().__init__(replies)
        self.tokenizer = tokenizer
        self.capabilities = Capabilities(tokenizer=tokenizer, tool_calls=True)
        self.prompts: list[str] = []
        self.options: list[Any] = []

    def chat(self, messages: list[Any], params: Any, options: Any = None) -> Any:
        from dataclasses import replace

        from ember.model.tool_calls import ToolCallParser, render_messages

        assert options is not None  # the native format always offers the tools
        chat, tools = render_messages(messages, options, native_tools=True)
        self.prompts.append(self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tools=tools))
        self.options.append(options)
        c = super().chat(messages, params)
        parser = ToolCallParser({t.name for t in options.tools})
        parser.feed(c.text)
        parser.finish()
        return replace(c, text=parser.content, tool_calls=list(parser.calls))


CALC = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'
FINAL = '<tool_call>\n{"name": "final_answer", "arguments": {"answer": "42"}}\n</tool_call>'


def native_backend(smollm2_folder: Path, replies: list[Any]) -> ScriptedNativeBackend:
    from ember.model.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(smollm2_folder)
    tokenizer.chat_template = TOOLS_TEMPLATE
    return ScriptedNativeBackend(replies, tokenizer)


def test_native_tool_call_format(smollm2_folder: Path) -> None:
    backend = native_backend(smollm2_folder, [CALC, FINAL])
    agent = Agent(backend, basic_tools(), AgentConfig(max_steps=3))
    assert agent.format == "native" and not agent.constrained
    trace = agent.run("What is 6*7?")
    assert trace.status == "answered" and trace.answer == "42" and trace.format == "native"
    # every reply must call a tool (the answer is the final_answer tool), one call per reply
    assert [t.name for t in backend.options[0].tools] == ["calculator", "current_time", "final_answer"]
    assert backend.options[0].tool_choice == "required" and not backend.options[0].parallel_tool_calls
    assert backend.prompts[0].startswith("<|im_start|>system\nTools: calculator current_time final_answer")
    task = next(i for i, m in enumerate(trace.messages) if m == {"role": "user", "content": "What is 6*7?"})
    assert trace.messages[:task] == prompts.agent_messages("What is 6*7?", basic_tools(), native=True, code=True)[:-1]
    first, result = trace.messages[task + 1], trace.messages[task + 2]
    assert first["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "6*7"}}
    assert result == {"role": "tool", "tool_call_id": "call_1", "name": "calculator", "content": "42"}
    assert "<|im_start|>tool\n42<|im_end|>" in backend.prompts[1]
    assert trace.steps[0].kind == "action" and trace.steps[1].kind == "final" and trace.steps[1].answer == "42"
    assert "Final Answer: 42" in trace.render() and "calculator" in trace.steps[0].output


def test_native_repeated_call_forces_the_final_answer(smollm2_folder: Path) -> None:
    backend = native_backend(smollm2_folder, [CALC, CALC, FINAL])
    trace = Agent(backend, basic_tools(), AgentConfig(max_steps=4)).run("What is 6*7?")
    assert trace.status == "answered" and trace.answer == "42"
    assert [o.tool_choice for o in backend.options] == ["required", "required", "final_answer"]


def test_native_plain_text_reply_is_the_answer(smollm2_folder: Path) -> None:
    backend = native_backend(smollm2_folder, ["Answer: 42"])  # a backend that does not force the call
    trace = Agent(backend, basic_tools(), AgentConfig(max_steps=2)).run("What is 6*7?")
    assert trace.status == "answered" and trace.answer == "42"


CODE = "Let me compute it.\n```python\n# six sevens\nsix = 6\ntotal = six * 7\ntotal\n```"


def test_native_code_action_runs_in_the_calculator(smollm2_folder: Path) -> None:
    """With the calculator, a native reply may be a ```python block (a code action): the calculator runs the
    program, its value comes back as a user message, and the step reads as a calculator call in the trace."""
    backend = native_backend(smollm2_folder, [CODE, FINAL])
    agent = Agent(backend, basic_tools(), AgentConfig(max_steps=3))
    trace = agent.run("What is 6*7?")
    assert trace.status == "answered" and trace.answer == "42"
    assert backend.options[0].code_block and backend.options[0].tool_choice == "required"
    step = trace.steps[0]
    assert (step.kind, step.tool, step.thought) == ("action", "calculator", "Let me compute it.")
    assert step.arguments == {"expression": "# six sevens\nsix = 6\ntotal = six * 7\ntotal"}
    assert step.observation == "42"
    assert trace.messages[-3] == {"role": "assistant", "content": CODE}  # as written: no tool call invented
    assert trace.messages[-2] == {"role": "user", "content": prompts.CODE_RESULT.format(result="42")}
    # the worked run before the task shows a code action too
    assert any(m["role"] == "assistant" and m["content"].startswith("```python") for m in trace.messages[:-4])
    rendered = trace.render()
    assert "Action: calculator  (" in rendered and "\n        six = 6\n        total = six * 7\n" in rendered


def test_native_code_action_errors_are_observations(smollm2_folder: Path) -> None:
    bad = "```python\nfor i in range(3):\n    total = i\n```"
    backend = native_backend(smollm2_folder, [bad, "```python\nx = y + 1\n```", FINAL])
    trace = Agent(backend, basic_tools(), AgentConfig(max_steps=3)).run("What is 6*7?")
    assert trace.status == "answered" and [s.error for s in trace.steps[:2]] == ["tool_error", "tool_error"]
    assert "not arithmetic" in (trace.steps[0].observation or "")
    assert "'y' is not defined" in (trace.steps[1].observation or "")


def test_no_code_actions_without_the_calculator(smollm2_folder: Path) -> None:
    from ember.agents.builtins import current_time
    from ember.agents.tools import Tool

    backend = native_backend(smollm2_folder, [CODE])
    trace = Agent(backend, [Tool.from_function(current_time)], AgentConfig(max_steps=2)).run("What is 6*7?")
    assert not backend.options[0].code_block
    assert trace.steps[0].kind == "final"  # text is the answer when no tool runs code
    assert not any(m["content"].startswith("```python") for m in trace.messages if m["role"] == "assistant")


def test_code_actions_only_for_our_calculator(smollm2_folder: Path) -> None:
    """An MCP server's tool that happens to be called "calculator" has its own arguments: no code actions."""
    from ember.agents.tools import Tool

    def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    backend = native_backend(smollm2_folder, [CODE])
    Agent(backend, [Tool.from_function(add, name="calculator")], AgentConfig(max_steps=1)).run("What is 6*7?")
    assert not backend.options[0].code_block
