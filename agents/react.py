"""The ReAct loop: the model thinks, calls a tool, reads the observation, and continues until it answers.

Two formats. "react" (text): the tools are described in the system prompt, the model writes `Thought:` then
`Action: {"name": ..., "arguments": {...}}` or `Final Answer: ...`, and observations come back as user
messages; on our engine the reply is generated under the tools' grammar (`ember.agents.grammar`), so it
always parses. "native": when the model's chat template takes `tools` (Qwen2.5's), the tools go to the
backend as OpenAI tools (`ChatOptions`, tool_choice auto, one call per reply): the template renders them, the
model writes its own `<tool_call>{...}</tool_call>`, on our engine under the same tools grammar the API uses
(`ember.model.tool_calls.lark_grammar`), and the call comes back as `Completion.tool_calls`; results go back as
`tool` messages. Every native reply must be a call (tool_choice required): the answer is a call to the
`final_answer` tool (smolagents' design), because a small model left free to write text writes its reasoning
instead of calling. A backend that returns text anyway has that text taken as the answer. With our calculator,
a native reply may also be one ```python block, a code action (smolagents' CodeAgent, in miniature): the
calculator runs it as a short arithmetic program and its value comes back as a user message. Prompts:
`ember.model.prompts`.

Error policy: what the model got wrong (unparsable reply, unknown tool, bad arguments, a tool that failed)
becomes an observation; one corrective observation per malformed reply, and a second malformed reply in a
row ends the run. A repeated identical call gets the earlier result back; under a grammar, when that result
was not an error, the next reply is constrained to a Thought and the Final Answer (small models otherwise
loop on a call that already answered). The step cap, the wall-clock cap and a call repeated beyond
`max_repeats` end the run with a clear status. Bugs in our own code raise.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ember.agents.builtins import calculate
from ember.agents.parsing import Parsed, parse_reply
from ember.agents.tools import Tool, Toolbox, ToolError
from ember.agents.trace import Status, Step, Trace
from ember.model import prompts
from ember.model.backends.base import Backend, Completion, Message
from ember.model.errors import EmberError, InvalidValueError
from ember.model.sampling_params import SamplingParams
from ember.model.tool_calls import ChatOptions, FunctionSpec

SYSTEM_PROMPT = prompts.AGENT_REACT_SYSTEM
OBSERVATION = prompts.OBSERVATION
CORRECTION = prompts.CORRECTION
describe_tools = prompts.describe_tools


FINAL_ANSWER = FunctionSpec(
    "final_answer", "Give the final answer to the task, once you know it.",
    {"type": "object", "properties": {"answer": {"type": "string", "description": "the answer alone, as short as "
                                                 "possible: a name, a number, yes or no"}},
     "required": ["answer"]})
FINAL_PREFIX = re.compile(r"\s*(final\s*answer|answer)\s*:\s*", re.IGNORECASE)
CODE_TOOL = "calculator"  # the tool that runs a code action's program
CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(slots=True)
class AgentConfig:
    max_steps: int = 8
    max_seconds: float = 300.0  # wall clock for the whole run, checked between steps
    max_tokens: int = 256  # per model reply
    temperature: float = 0.0
    constrained: bool | None = None  # None = whenever the backend can (our engine, text format)
    format: Literal["auto", "react", "native"] = "auto"
    max_repeats: int = 2  # an identical call beyond this many ends the run (the 2nd gets a warning)
    max_observation_chars: int = 2000

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_seconds <= 0 or self.max_tokens < 1 or self.max_repeats < 1:
            raise InvalidValueError("max_steps, max_seconds, max_tokens and max_repeats must be positive")
        if self.format not in ("auto", "react", "native"):
            raise InvalidValueError(f"format must be auto, react or native, got {self.format!r}")


def _supports_grammar(backend: Backend) -> bool:
    c = backend.capabilities
    return c.logits_processors and c.tokenizer is not None and c.vocab_size is not None


class Agent:
    def __init__(self, backend: Backend, tools: Toolbox | list[Tool], config: AgentConfig | None = None) -> None:
        self.backend = backend
        self.toolbox = tools if isinstance(tools, Toolbox) else Toolbox(tools)
        self.config = config = config or AgentConfig()
        caps = backend.capabilities
        native = caps.native_tools and caps.tool_calls
        if config.format == "native" and not native:
            raise EmberError(f"the {backend.name} backend's chat template has no tool-call format",
                             hint="Use format='react' (the text ReAct format).")
        self.format = "native" if config.format == "native" or (config.format == "auto" and native) else "react"
        # natively, arithmetic may come as a ```python block that the calculator runs (a code action: a small
        # coder model writes a program far better than it writes one inside a JSON string); only our own calculator
        # runs them (an MCP tool of that name has its own arguments)
        self._code = self.format == "native" and CODE_TOOL in self.toolbox and self.toolbox[CODE_TOOL].fn is calculate
        if self.format == "native":  # the backend constrains calls itself where it can (our engine)
            if config.constrained and not caps.constrained:
                raise EmberError(f"the {backend.name} backend does not constrain tool calls")
            self.constrained = caps.constrained
            specs = tuple(FunctionSpec(t.name, t.description, t.parameters) for t in self.toolbox)
            self._options = ChatOptions((*specs, FINAL_ANSWER), "required", parallel_tool_calls=False,
                                        code_block=self._code)
        else:
            can = _supports_grammar(backend) and len(self.toolbox) > 0
            if config.constrained and not can:
                raise EmberError("constrained tool calls need our engine (backend 'ember') and the text format")
            self.constrained = can if config.constrained is None else config.constrained
        self._grammar: Any = None
        if self.constrained and self.format == "react":  # natively the backend applies its own tools grammar
            from ember.agents.grammar import ToolGrammar

            c = backend.capabilities
            assert c.tokenizer is not None and c.vocab_size is not None  # _supports_grammar checked them
            self._grammar = ToolGrammar(list(self.toolbox), c.tokenizer, c.vocab_size, set(c.eos_ids))

    # ---- the model -------------------------------------------------------------------------------
    def _params(self, final_only: bool = False) -> SamplingParams:
        c = self.config
        procs = [self._grammar.processor(final_only)] if self._grammar is not None else []
        stop = [] if self.constrained or self.format == "native" else ["\nObservation:"]
        return SamplingParams(max_tokens=c.max_tokens, temperature=c.temperature, stop=stop, logits_processors=procs)

    def _generate(self, messages: list[Message], final_only: bool = False) -> Completion:
        if self.format == "native":
            options = replace(self._options, tool_choice=FINAL_ANSWER.name) if final_only else self._options
            return self.backend.chat(messages, self._params(), options)
        return self.backend.chat(messages, self._params(final_only))

    def _messages(self, task: str) -> list[Message]:
        return prompts.agent_messages(task, list(self.toolbox), self.format == "native", code=self._code)

    def _parse(self, completion: Completion) -> Parsed:
        if self.format != "native":
            return parse_reply(completion.text)
        if completion.tool_calls:
            call = completion.tool_calls[0]
            try:
                args = json.loads(call.arguments) if call.arguments.strip() else {}
            except ValueError:
                return Parsed("malformed", completion.text, error=f"the arguments of {call.name} are not JSON")
            if call.name == FINAL_ANSWER.name and call.name not in self.toolbox:
                answer = args.get("answer") if isinstance(args, dict) else None
                return Parsed("final", completion.text.strip(), answer=str(answer if answer is not None else args))
            return Parsed("action", completion.text.strip(), tool=call.name, arguments=args)
        text = completion.text.strip()
        code = CODE_BLOCK.search(text) if self._code else None
        if code is not None:
            return Parsed("action", text[:code.start()].strip(), tool=CODE_TOOL,
                          arguments={"expression": code.group(1).strip()}, code=True)
        if not text:
            return Parsed("malformed", error="an empty reply")
        final = FINAL_PREFIX.match(text)
        return Parsed("final", answer=text[final.end():].strip() if final else text)

    def _assistant(self, completion: Completion, parsed: Parsed, index: int) -> Message:
        if self.format == "native" and parsed.kind == "action" and not parsed.code:
            return {"role": "assistant", "content": completion.text,
                    "tool_calls": [{"id": f"call_{index}", "type": "function",
                                    "function": {"name": parsed.tool, "arguments": parsed.arguments}}]}
        return {"role": "assistant", "content": completion.text}

    def _observe(self, messages: list[Message], step: Step, text: str, code: bool = False) -> None:
        limit = self.config.max_observation_chars
        text = text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"
        step.observation = text
        if code:
            messages.append({"role": "user", "content": prompts.CODE_RESULT.format(result=text)})
        elif self.format == "native" and step.kind == "action":
            messages.append({"role": "tool", "tool_call_id": f"call_{step.index}", "name": step.tool or "",
                             "content": text})
        else:
            messages.append({"role": "user", "content": OBSERVATION.format(result=text)})

    # ---- tools ---------------------------------------------------------------------------------------
    def _call(self, parsed: Parsed, step: Step) -> str:
        name, args = parsed.tool or "", parsed.arguments
        t0 = time.perf_counter()
        try:
            if name not in self.toolbox:
                step.error = "unknown_tool"
                self.toolbox.call(name, args)  # raises a ToolError listing the tools
            try:  # a code action's program is not held to the schema's pattern (that is for JSON strings)
                args = args if parsed.code else self.toolbox[name].validate(args)
            except ToolError:
                step.error = "invalid_arguments"
                raise
            result = self.toolbox[name].fn(**args)
            return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
        except ToolError as e:
            step.error = step.error or "tool_error"
            return f"Error: {e.message}"
        except Exception as e:  # a tool failing on the model's input: the model should see it and adapt
            step.error = "tool_error"
            return f"Error: {name} raised {type(e).__name__}: {e}"
        finally:
            step.tool_s = time.perf_counter() - t0

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self, task: str, on_step: Callable[[Step], None] | None = None) -> Trace:
        c = self.config
        trace = Trace(task=task, backend=self.backend.name, format=self.format, constrained=self.constrained,
                      tools=[t.name for t in self.toolbox])
        messages = self._messages(task)
        seen: Counter[str] = Counter()
        results: dict[str, tuple[str, bool]] = {}  # call key -> (observation, the call failed)
        start = time.perf_counter()
        status: Status = "max_steps"
        detail = f"no answer after {c.max_steps} steps"
        malformed_in_row = 0
        final_only = False  # set when the model repeats a call that already answered (constrained runs)
        for index in range(1, c.max_steps + 1):
            if time.perf_counter() - start > c.max_seconds:
                status, detail = "timeout", f"no answer after {c.max_seconds:g}s"
                break
            t0 = time.perf_counter()
            try:
                completion = self._generate(messages, final_only)
            except EmberError as e:
                status, detail = "backend_error", e.message
                break
            text = completion.text
            parsed = self._parse(completion)
            output = text + "".join(f"<tool_call>{{\"name\": {json.dumps(c.name)}, \"arguments\": {c.arguments}}}"
                                    "</tool_call>" for c in completion.tool_calls)  # native calls, as written
            step = Step(index, output, parsed.kind, parsed.thought, parsed.tool, parsed.arguments,
                        llm_s=time.perf_counter() - t0, prompt_tokens=completion.prompt_tokens,
                        completion_tokens=completion.completion_tokens, answer=parsed.answer)
            trace.steps.append(step)
            messages.append(self._assistant(completion, parsed, index))
            if parsed.kind == "final":
                trace.answer = parsed.answer
                status, detail = "answered", ""
                if on_step:
                    on_step(step)
                break
            if parsed.kind == "malformed":
                step.error = "parse"
                malformed_in_row += 1
                if malformed_in_row > 1:
                    if on_step:
                        on_step(step)
                    status, detail = "parse_error", "two unparsable replies in a row"
                    break
                self._observe(messages, step, CORRECTION.format(error=parsed.error))
            else:
                malformed_in_row = 0
                key = f"{parsed.tool}\0{json.dumps(parsed.arguments, sort_keys=True, default=str)}"
                seen[key] += 1
                if seen[key] > c.max_repeats:
                    step.error = "repeated"
                    if on_step:
                        on_step(step)
                    status, detail = "repeated_call", f"{parsed.tool} called {seen[key]} times with the same arguments"
                    break
                if seen[key] > 1:
                    step.error = "repeated"
                    observation, failed = results[key]
                    final_only = (self.constrained or self.format == "native") and not failed
                    then = "Give the Final Answer now." if final_only else "Use it, or give the Final Answer."
                    self._observe(messages, step, f"You already called {parsed.tool} with these arguments; the "
                                  f"result was: {observation}\n{then}", parsed.code)
                else:
                    observation = self._call(parsed, step)
                    results[key] = observation, step.error is not None
                    self._observe(messages, step, observation, parsed.code)
            if on_step:
                on_step(step)
        trace.status, trace.detail = status, detail
        trace.messages = messages
        trace.total_s = time.perf_counter() - start
        return trace
