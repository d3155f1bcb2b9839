"""The ReAct loop: the model thinks, calls a tool, reads the observation, and continues until it answers.

Two formats. "react" (text): the tools are described in the system prompt, the model writes `Thought:` then
`Action: {"name": ..., "arguments": {...}}` or `Final Answer: ...`, and observations come back as user
messages; on our engine the reply is generated under the tools' grammar (`ember.agents.grammar`), so it
always parses. "native": when the model's chat template takes `tools`, the prompt is rendered with them and
the reply's tool call (e.g. `<tool_call>{...}</tool_call>`) is read by the same tolerant parser.

Error policy: what the model got wrong (unparsable reply, unknown tool, bad arguments, a tool that failed)
becomes an observation; one corrective observation per malformed reply, and a second malformed reply in a
row ends the run. A repeated identical call gets the earlier result back; under a grammar, when that result
was not an error, the next reply is constrained to a Thought and the Final Answer (small models otherwise
loop on a call that already answered). The step cap, the wall-clock cap and a call repeated beyond
`max_repeats` end the run with a clear status. Bugs in our own code raise.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ember.agents.parsing import Parsed, parse_reply
from ember.agents.tools import Tool, Toolbox, ToolError
from ember.agents.trace import Status, Step, Trace
from ember.model.backends.base import Backend, Completion, Message
from ember.model.errors import EmberError, InvalidValueError
from ember.model.sampling_params import SamplingParams

SYSTEM_PROMPT = """You solve the user's task step by step, using tools.

Tools (call one at a time; "arguments" must follow the tool's JSON schema):
{tools}

Each reply is one Thought line and then one Action line with a JSON tool call, or one Final Answer.
Example with a weather tool:
Thought: I need the weather in Paris, so I call the weather tool.
Action: {{"name": "get_weather", "arguments": {{"city": "Paris"}}}}
Observation: {{"temperature_c": 18}}
Thought: The observation answers the question.
Final Answer: It is 18 °C in Paris."""

OBSERVATION = "Observation: {result}\n(If this answers the task, reply with a Thought and the Final Answer.)"

CORRECTION = ('Your reply could not be parsed ({error}). Reply with "Thought: ..." and then either '
              '"Action: {{\\"name\\": \\"<tool>\\", \\"arguments\\": {{...}}}}" or "Final Answer: ...".')


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


def describe_tools(tools: list[Tool]) -> str:
    return "\n".join(f"- {t.name}: {t.description}\n  arguments schema: {json.dumps(t.parameters)}" for t in tools)


def _supports_grammar(backend: Backend) -> bool:
    c = backend.capabilities
    return c.logits_processors and c.tokenizer is not None and c.vocab_size is not None


class Agent:
    def __init__(self, backend: Backend, tools: Toolbox | list[Tool], config: AgentConfig | None = None) -> None:
        self.backend = backend
        self.toolbox = tools if isinstance(tools, Toolbox) else Toolbox(tools)
        self.config = config = config or AgentConfig()
        native = backend.capabilities.native_tools
        if config.format == "native" and not native:
            raise EmberError(f"the {backend.name} backend's chat template has no tool-call format",
                             hint="Use format='react' (the text ReAct format).")
        self.format = "native" if config.format == "native" or (config.format == "auto" and native) else "react"
        can = _supports_grammar(backend) and self.format == "react" and len(self.toolbox) > 0
        if config.constrained and not can:
            raise EmberError("constrained tool calls need our engine (backend 'ember') and the text format")
        self.constrained = can if config.constrained is None else config.constrained
        self._grammar: Any = None
        if self.constrained:
            from ember.agents.grammar import ToolGrammar

            c = backend.capabilities
            assert c.tokenizer is not None and c.vocab_size is not None  # _supports_grammar checked them
            self._grammar = ToolGrammar(list(self.toolbox), c.tokenizer, c.vocab_size, set(c.eos_ids))

    # ---- the model -------------------------------------------------------------------------------
    def _params(self, final_only: bool = False) -> SamplingParams:
        c = self.config
        procs = [self._grammar.processor(final_only)] if self._grammar is not None else []
        stop = [] if self.constrained else ["\nObservation:"]
        return SamplingParams(max_tokens=c.max_tokens, temperature=c.temperature, stop=stop, logits_processors=procs)

    def _generate(self, messages: list[Message], final_only: bool = False) -> Completion:
        if self.format == "native":
            tokenizer = self.backend.capabilities.tokenizer
            assert tokenizer is not None  # native format: the template came from this tokenizer
            specs = [t.spec() for t in self.toolbox]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=specs)
            ids = tokenizer.encode(text, add_special_tokens=False)
            return self.backend.generate([ids], self._params())[0]
        return self.backend.chat(messages, self._params(final_only))

    def _messages(self, task: str) -> list[Message]:
        if self.format == "native":
            return [{"role": "user", "content": task}]
        return [{"role": "system", "content": SYSTEM_PROMPT.format(tools=describe_tools(list(self.toolbox)))},
                {"role": "user", "content": task}]

    def _observe(self, messages: list[Message], step: Step, text: str) -> None:
        limit = self.config.max_observation_chars
        text = text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"
        step.observation = text
        if self.format == "native":
            messages.append({"role": "tool", "name": step.tool or "", "content": text})
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
            try:
                args = self.toolbox[name].validate(args)
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
            parsed = parse_reply(text)
            if self.format == "native" and parsed.kind == "malformed" and text.strip():
                parsed = Parsed("final", answer=text.strip())  # native format: plain text is the answer
            step = Step(index, text, parsed.kind, parsed.thought, parsed.tool, parsed.arguments,
                        llm_s=time.perf_counter() - t0, prompt_tokens=completion.prompt_tokens,
                        completion_tokens=completion.completion_tokens)
            trace.steps.append(step)
            messages.append({"role": "assistant", "content": text})
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
                    final_only = self.constrained and not failed
                    then = "Give the Final Answer now." if final_only else "Use it, or give the Final Answer."
                    self._observe(messages, step, f"You already called {parsed.tool} with these arguments; the "
                                  f"result was: {observation}\n{then}")
                else:
                    observation = self._call(parsed, step)
                    results[key] = observation, step.error is not None
                    self._observe(messages, step, observation)
            if on_step:
                on_step(step)
        trace.status, trace.detail = status, detail
        trace.messages = messages
        trace.total_s = time.perf_counter() - start
        return trace
