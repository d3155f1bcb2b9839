"""OpenAI function calling and structured outputs for a model run in this process (our engine, vLLM).

`ChatOptions` is what a chat request asks beyond text: `tools`, `tool_choice` (auto, none, required, or one
function by name), `parallel_tool_calls` and `response_format` (json_object, json_schema). `from_openai`
validates the OpenAI fields (unique function names, well-formed JSON schemas, a named choice that exists)
and raises `ToolsError` (a 400) naming the field.

The format is Hermes/Qwen2.5's, the most common open one: the tools are listed in the system prompt, and a call
is `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`. A chat template that takes `tools`
(Qwen2.5's) renders them natively; for any other template (SmolLM2's) `render_messages` writes the same
block into the system prompt and turns assistant `tool_calls` and `tool` messages into that text. On our
engine the reply is decoded under `lark_grammar(options)`: a call is valid JSON naming an existing tool with
schema-valid arguments, `required` or a named choice forces calls, and `auto` lets the model write text or
calls. `ToolCallParser` reads the reply back (streamed or not) into content and `ToolCall`s, with the
argument text streamed as it is generated, as OpenAI streams it.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ember.model.outputs import Completion, Delta, ToolCall, ToolCallDelta
from ember.model.sampling_params import InvalidRequestError

Json = dict[str, Any]
Message = dict[str, Any]

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
MAX_TOOLS = 128
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
MAX_ARG_STRING = 200  # strings in a call are capped in the grammar so a rambling model cannot fill max_tokens
MAX_FIELD_STRING = 1000  # the same for structured outputs, whose strings are often the answer itself
MAX_ITEMS = 16  # and arrays without maxItems (a small model repeats list items until max_tokens)
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
EMPTY_OBJECT: Json = {"type": "object", "properties": {}}


class ToolsError(InvalidRequestError):
    """Malformed `tools`, `tool_choice` or `response_format` (HTTP 400); `param` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    description: str = ""
    parameters: Json = field(default_factory=lambda: dict(EMPTY_OBJECT))
    strict: bool = False

    def to_openai(self) -> Json:
        function: Json = {"name": self.name, "description": self.description, "parameters": self.parameters}
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: Literal["json_object", "json_schema"]
    schema: Json | None = None  # json_schema only
    name: str = "response"
    strict: bool = False

    def to_openai(self) -> Json:
        if self.type == "json_object":
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema, "strict": self.strict}}


@dataclass(frozen=True, slots=True)
class ChatOptions:
    tools: tuple[FunctionSpec, ...] = ()
    tool_choice: Literal["auto", "none", "required"] | str = "auto"  # or a function's name
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    # Ember's agent only (never from a request): a reply may also be one fenced ```python block, a code action
    # that the agent runs in its calculator (`ember.agents.react`)
    code_block: bool = False

    @property
    def calls_allowed(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def named(self) -> str | None:
        return None if self.tool_choice in ("auto", "none", "required") else self.tool_choice

    @classmethod
    def from_openai(cls, tools: list[Json] | None = None, tool_choice: str | Json | None = None,
                    parallel_tool_calls: bool | None = None, response_format: Json | None = None) -> ChatOptions:
        specs = tuple(_function(t, i) for i, t in enumerate(tools or []))
        if len(specs) > MAX_TOOLS:
            raise ToolsError(f"at most {MAX_TOOLS} tools per request (got {len(specs)})", "tools")
        names = [s.name for s in specs]
        for n in names:
            if names.count(n) > 1:
                raise ToolsError(f"two tools are named {n!r}; function names must be unique", "tools")
        choice = _tool_choice(tool_choice, set(names))
        return cls(specs, choice, True if parallel_tool_calls is None else parallel_tool_calls,
                   _response_format(response_format))

    def to_openai(self) -> Json:
        """The request fields for an OpenAI-compatible server (what the `openai` backend passes through)."""
        out: Json = {}
        if self.tools:
            out["tools"] = [t.to_openai() for t in self.tools]
            out["tool_choice"] = ({"type": "function", "function": {"name": self.named}} if self.named
                                  else self.tool_choice)
            out["parallel_tool_calls"] = self.parallel_tool_calls
        if self.response_format is not None:
            out["response_format"] = self.response_format.to_openai()
        return out


def _check_schema(schema: Any, param: str) -> Json:
    import jsonschema

    if not isinstance(schema, dict):
        raise ToolsError(f"a JSON schema must be an object, got {type(schema).__name__}", param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ToolsError(f"not a valid JSON schema: {e.message}", param) from None
    return schema


def _function(tool: Any, i: int) -> FunctionSpec:
    param = f"tools.{i}"
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise ToolsError("only tools of type 'function' are supported", f"{param}.type")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise ToolsError("a tool needs a 'function' object", f"{param}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ToolsError(f"function names are 1-64 letters, digits, '_' or '-' (got {name!r})",
                         f"{param}.function.name")
    parameters = fn.get("parameters")
    parameters = dict(EMPTY_OBJECT) if parameters is None else _check_schema(parameters, f"{param}.function.parameters")
    if parameters.get("type", "object") != "object":
        raise ToolsError("function parameters must be a JSON schema of type 'object'", f"{param}.function.parameters")
    return FunctionSpec(name, str(fn.get("description") or ""), parameters, bool(fn.get("strict")))


def _tool_choice(choice: str | Json | None, names: set[str]) -> str:
    if choice is None:
        return "auto" if names else "none"
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise ToolsError(f"must be 'auto', 'none', 'required' or a named function (got {choice!r})", "tool_choice")
        if choice == "required" and not names:
            raise ToolsError("'required' needs at least one tool", "tool_choice")
        return choice
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise ToolsError("a named choice is {\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
    if name not in names:
        raise ToolsError(f"names the function {name!r}, which is not among the tools", "tool_choice")
    return name


def _response_format(fmt: Json | None) -> ResponseFormat | None:
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return ResponseFormat("json_object")
    if fmt.get("type") != "json_schema":
        raise ToolsError(f"type must be 'text', 'json_object' or 'json_schema' (got {fmt.get('type')!r})",
                         "response_format.type")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or "schema" not in spec:
        raise ToolsError("json_schema needs a 'schema'", "response_format.json_schema")
    schema = _check_schema(spec["schema"], "response_format.json_schema.schema")
    return ResponseFormat("json_schema", schema, str(spec.get("name") or "response"), bool(spec.get("strict")))


# ---- the prompt -------------------------------------------------------------------------------------------

def tools_prompt(tools: tuple[FunctionSpec, ...]) -> str:
    """The tool block of the system prompt for templates without a tools slot (Qwen2.5's own wording)."""
    listed = "\n".join(json.dumps(t.to_openai(), ensure_ascii=False) for t in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{listed}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n"
            '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def format_prompt(fmt: ResponseFormat) -> str:
    if fmt.schema is None:
        return "Reply with a single JSON object and nothing else."
    return ("Reply with a single JSON object and nothing else. It must follow this JSON schema:\n"
            + json.dumps(fmt.schema, ensure_ascii=False))


def _arguments(raw: Any) -> Any:
    """A call's arguments as the template expects them: a dict (the history carries JSON text)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _call_text(call: Json) -> str:
    fn = call.get("function", call)
    body = {"name": fn.get("name"), "arguments": _arguments(fn.get("arguments", {}))}
    return f"{TOOL_OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{TOOL_CLOSE}"


def render_messages(messages: list[Message], options: ChatOptions, native_tools: bool
                    ) -> tuple[list[Message], list[Json] | None]:
    """(messages, tools) for the chat template. Natively the template gets the tools and the tool-call history
    as they are; otherwise the system prompt carries the tool block and the history becomes Hermes text."""
    offer = options.calls_allowed
    extra = [format_prompt(options.response_format)] if options.response_format is not None else []
    if native_tools:
        out = []
        for m in messages:
            m = dict(m)
            if m.get("tool_calls"):
                m["tool_calls"] = [{**c, "function": {**c.get("function", {}),
                                                      "arguments": _arguments(c.get("function", {}).get("arguments"))}}
                                   for c in m["tool_calls"]]
            m["content"] = m.get("content") or ""
            out.append(m)
        return _with_system(out, "\n\n".join(extra)), [t.to_openai() for t in options.tools] if offer else None
    out = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = "\n".join(_call_text(c) for c in m["tool_calls"])
            out.append({"role": "assistant", "content": f"{content}\n{calls}" if content else calls})
        elif role == "tool":
            response = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1].get("tool_responses"):
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + response}
            else:
                out.append({"role": "user", "content": response, "tool_responses": True})
        else:
            out.append({"role": role, "content": content})
    out = [{k: v for k, v in m.items() if k != "tool_responses"} for m in out]
    blocks = ([tools_prompt(options.tools)] if offer else []) + extra
    return _with_system(out, "\n\n".join(blocks)), None


def _with_system(messages: list[Message], block: str) -> list[Message]:
    if not block:
        return messages
    if messages and messages[0].get("role") == "system":
        first = messages[0].get("content") or ""
        return [{**messages[0], "content": f"{first}\n\n{block}" if first else block}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


# ---- the grammar ------------------------------------------------------------------------------------------

def bounded(schema: Any, max_string: int) -> Any:
    """A stricter copy of `schema` for the grammar (what is valid does not change for a sensible reply): strings
    without maxLength get `max_string`, arrays without maxItems MAX_ITEMS, and objects that list their
    properties admit no others unless they say so."""
    if isinstance(schema, dict):
        out = {k: (bounded(v, max_string) if k not in ("const", "enum", "default", "examples") else v)
               for k, v in schema.items()}
        if isinstance(out.get("properties"), dict):
            out["properties"] = {k: bounded(v, max_string) for k, v in schema["properties"].items()}
            out.setdefault("additionalProperties", False)
        if out.get("type") == "string" and not {"maxLength", "enum", "const", "format", "pattern"} & out.keys():
            out["maxLength"] = max_string
        if out.get("type") == "array" and "maxItems" not in out:
            out["maxItems"] = max(MAX_ITEMS, int(out.get("minItems", 0)))
        return out
    if isinstance(schema, list):
        return [bounded(v, max_string) for v in schema]
    return schema


def _call_schema(tools: tuple[FunctionSpec, ...]) -> Json:
    options = []
    for t in tools:
        args = bounded(copy.deepcopy(t.parameters), MAX_ARG_STRING)
        args.pop("title", None)
        options.append({"type": "object", "properties": {"name": {"const": t.name}, "arguments": args},
                        "required": ["name", "arguments"], "additionalProperties": False})
    one = {"anyOf": options} if len(options) > 1 else options[0]
    return {**one, "x-guidance": JSON_STYLE}


def _json_rule(schema: Json) -> str:
    return "%json " + json.dumps(schema, ensure_ascii=False)


def tag_rules(tokenizer: Any) -> tuple[str, str]:
    """How the grammar spells TOOL_OPEN / TOOL_CLOSE for `tokenizer`: as the token when the vocabulary has one
    (Qwen2.5's `<tool_call>` is an added token, which llguidance matches only by id), else as text."""
    ids = [tokenizer.backend.token_to_id(t) for t in (TOOL_OPEN, TOOL_CLOSE)]
    if all(isinstance(i, int) for i in ids):
        return f"<[{ids[0]}]>", f"<[{ids[1]}]>"
    return f'"{TOOL_OPEN}"', f'"{TOOL_CLOSE}"'


def lark_grammar(options: ChatOptions, tags: tuple[str, str] = (f'"{TOOL_OPEN}"', f'"{TOOL_CLOSE}"')) -> str | None:
    """The llguidance lark grammar of a reply under `options`, or None when the reply is free text; `tags`: the
    grammar's spelling of TOOL_OPEN and TOOL_CLOSE (`tag_rules`)."""
    fmt = options.response_format
    text: str | None = None
    if fmt is not None:
        schema = bounded(copy.deepcopy(fmt.schema), MAX_FIELD_STRING) if fmt.schema is not None else {"type": "object"}
        text = _json_rule({**schema, "x-guidance": JSON_STYLE})
    if not options.calls_allowed:
        return f"start: {text}\n" if text else None
    tools = options.tools if options.named is None else tuple(t for t in options.tools if t.name == options.named)
    call = f'call: {tags[0]} "\\n" {_json_rule(_call_schema(tools))} "\\n" {tags[1]}\n'
    one = not options.parallel_tool_calls or options.named is not None  # a named choice: that one call
    calls = "calls: call\n" if one else 'calls: call ("\\n" call)*\n'
    # calls in the tags, or one bare call object (what Qwen2.5-Coder writes unprompted, and then it stops)
    bare = f"bare: {_json_rule(_call_schema(tools))}\n"
    code, code_rule = (" | code", CODE_RULE) if options.code_block and options.named is None else ("", "")
    if options.tool_choice != "auto":
        return f"start: calls | bare{code}\n" + calls + call + bare + code_rule
    # auto: those, or text that opens with none of '<', '{' or '`' (so it is not an unconstrained call: tagged,
    # bare or fenced)
    return (f"start: calls | bare | reply{code}\n" + f"reply: {text or 'TEXT'}\n" + 'TEXT: /[^<{`](.|\\n)*/\n'
            + calls + call + bare + code_rule)


# A code action: one ```python block (no backticks inside), then the reply ends
CODE_RULE = 'code: CODE\nCODE: /```python\\n([^`]|`[^`]|``[^`])+```/\n'  # one lexeme, so its end is unambiguous


# ---- reading the reply back -------------------------------------------------------------------------------

_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


class RepeatStop:
    """A `LogitsProcessor` after the grammar's: once the reply's latest `<tool_call>` block repeats an earlier one
    word for word, only an end-of-sequence token is allowed (the grammar allows one there). Small models repeat a
    call until max_tokens under parallel tool calls; an identical second call is never useful."""

    def __init__(self, tokenizer: Any, eos_ids: tuple[int, ...]) -> None:
        self.tokenizer, self.eos_ids = tokenizer, list(eos_ids)

    def __call__(self, output_ids: list[int], logits: Any) -> Any:
        if not output_ids or TOOL_CLOSE[2:] not in self.tokenizer.decode(output_ids[-4:], skip_special_tokens=False):
            return logits
        text = self.tokenizer.decode(output_ids, skip_special_tokens=False)
        if not text.rstrip().endswith(TOOL_CLOSE):
            return logits
        blocks = [b.strip() for b in text.split(TOOL_OPEN)[1:]]
        if len(blocks) > 1 and blocks[-1] in blocks[:-1]:
            keep = logits[self.eos_ids].clone()
            logits.fill_(float("-inf"))
            logits[self.eos_ids] = keep
        return logits


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class ToolCallParser:
    """Splits a reply, fed piece by piece, into content and `<tool_call>` blocks, and turns each block into
    OpenAI-style deltas as it arrives: the call's id and name once they are known, then its argument text.
    Whitespace between calls is not content; a block that does not parse stays content (unless its name went out)."""

    def __init__(self, names: Collection[str] | None = None) -> None:
        self.names = set(names) if names is not None else None  # a bare object is a call only if it names one
        self._reject = False  # the current bare object is not a call: it stays content
        self.calls: list[ToolCall] = []
        self.content = ""
        self._buf = ""  # text not yet handed out (a possible start of TOOL_OPEN, or held whitespace)
        self._in_call = False
        self._body = ""  # the current call's text after TOOL_OPEN
        self._name: str | None = None
        self._id = ""
        self._args_start = 0  # where the arguments begin in _body
        self._sent = 0  # chars of the arguments already streamed
        self._args_end: int | None = None  # where the arguments end in _body, once their JSON closed
        self._bare = False  # the reply is one call object without the tags (it ends where its JSON closes)

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        self._buf += text
        while self._buf:
            if self._in_call:
                self._body, self._buf = self._body + self._buf, ""
                if self._bare:
                    closed = _json_end(self._body, 0)
                    end, skip = (-1, 0) if closed is None else (closed, 0)
                else:
                    end, skip = self._body.find(TOOL_CLOSE), len(TOOL_CLOSE)
                limit = end if end != -1 else len(self._body) - (0 if self._bare else _partial_suffix(
                    self._body, TOOL_CLOSE))
                deltas.extend(self._advance(limit))
                if end != -1:
                    rest = self._body[end + skip:]
                    failed, more = self._close(self._body[:end])
                    content.append(failed)
                    deltas.extend(more)
                    self._in_call, self._bare, self._buf = False, False, rest.lstrip("\n")
                continue
            if not self.content and not self.calls and not content and self._buf.lstrip().startswith("{"):
                self._buf = self._buf.lstrip()  # a bare call object, as some models write it
                self._in_call, self._bare, self._body, self._name, self._args_end, self._sent = (
                    True, True, "", None, None, 0)
                self._reject = False
                continue
            i = self._buf.find(TOOL_OPEN)
            if i == -1:  # hand out the text, holding back a possible TOOL_OPEN and trailing whitespace
                keep = _partial_suffix(self._buf, TOOL_OPEN)
                ready = self._buf[:len(self._buf) - keep]
                stripped = ready.rstrip()
                if stripped:
                    content.append(stripped)
                    self._buf = self._buf[len(stripped):]
                break
            if self._buf[:i].strip():
                content.append(self._buf[:i].rstrip())
            self._buf = self._buf[i + len(TOOL_OPEN):]
            self._in_call, self._body, self._name, self._args_end, self._sent = True, "", None, None, 0
        out = "".join(content)
        self.content += out
        return out, deltas

    def _advance(self, limit: int) -> list[ToolCallDelta]:
        """Stream what is known of the current call (in `_body[:limit]`): its header, then argument text."""
        out: list[ToolCallDelta] = []
        if self._reject:
            return out
        if self._name is None:
            m = _HEADER.match(self._body, 0, limit)
            if m is None or m.end() == limit:  # wait for the first argument character
                return out
            try:
                self._name = json.loads(f'"{m.group(1)}"')
            except ValueError:
                return out
            if self._bare and self.names is not None and self._name not in self.names:
                self._name, self._reject = None, True
                return out
            self._id, self._args_start = new_call_id(), m.end()
            out.append(ToolCallDelta(len(self.calls), self._id, self._name, ""))
        if self._args_end is None:
            self._args_end = _json_end(self._body[:limit], self._args_start)
        stop = self._args_end if self._args_end is not None else limit
        piece = self._body[self._args_start + self._sent:stop]
        if piece:
            self._sent += len(piece)
            out.append(ToolCallDelta(len(self.calls), arguments=piece))
        return out

    def _close(self, body: str) -> tuple[str, list[ToolCallDelta]]:
        """Record the call in `body`; ("", deltas), or (the block as text, []) when it does not parse."""
        if self._name is not None:  # streamed: the arguments are the JSON text the model wrote
            stop = self._args_end if self._args_end is not None else len(body.rstrip().removesuffix("}"))
            args = body[self._args_start:stop].strip()
            out = []
            if len(args) > self._sent:
                out.append(ToolCallDelta(len(self.calls), arguments=args[self._sent:]))
            self.calls.append(ToolCall(self._id, self._name, args))
            return "", out
        try:  # an unconstrained model's other key order, say
            if self._reject:
                raise TypeError("not a call")
            call = json.loads(body)
            name, args = call["name"], call["arguments"] if "arguments" in call else call["parameters"]
            if not isinstance(name, str) or (self.names is not None and name not in self.names):
                raise TypeError(name)
        except (ValueError, KeyError, TypeError):
            return (body if self._bare else f"{TOOL_OPEN}{body}{TOOL_CLOSE}"), []
        arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        self.calls.append(ToolCall(new_call_id(), name, arguments))
        return "", [ToolCallDelta(len(self.calls) - 1, self.calls[-1].id, name, arguments)]

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """The rest at the end of the reply (a call cut short by max_tokens keeps what it has)."""
        if self._in_call:
            self._in_call = False
            if self._name is not None:
                return self._close(self._body)
            tail = TOOL_OPEN + self._body
        else:
            tail = self._buf
        self._buf = ""
        if self.calls and not tail.strip():
            return "", []
        self.content += tail
        return tail, []


def _partial_suffix(text: str, token: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of `token`."""
    for n in range(min(len(token) - 1, len(text)), 0, -1):
        if text.endswith(token[:n]):
            return n
    return 0


def _json_end(text: str, start: int) -> int | None:
    """The end of the JSON value that starts at text[start] (an object or array), or None if it is not closed yet."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def parse_stream(deltas: Iterator[Delta], options: ChatOptions) -> Iterator[Delta]:
    """A backend's raw stream -> content and tool-call deltas; the last delta's completion carries the calls
    (`finish_reason` "tool_calls" when there are any and the reply ended normally)."""
    if not options.calls_allowed:
        yield from deltas
        return
    parser = ToolCallParser({t.name for t in options.tools})
    for d in deltas:
        text, calls = parser.feed(d.text)
        if d.completion is not None:
            tail, more = parser.finish()
            text, calls = text + tail, calls + more
            c = d.completion
            reason = "tool_calls" if parser.calls and c.finish_reason == "stop" else c.finish_reason
            done = replace(c, text=parser.content.strip() if parser.calls else parser.content,
                           tool_calls=list(parser.calls), finish_reason=reason)
            yield Delta(text, d.token_ids, reason, done, d.logprobs, calls or None)
            return
        if text or calls or d.token_ids:
            yield Delta(text, d.token_ids, logprobs=d.logprobs, tool_calls=calls or None)


def collect(deltas: Iterator[Delta]) -> Completion:
    """The completion at the end of a stream."""
    final: Completion | None = None
    for d in deltas:
        final = d.completion or final
    if final is None:
        raise InvalidRequestError("the stream ended without a completion")
    return final
