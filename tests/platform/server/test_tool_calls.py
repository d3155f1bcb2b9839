"""Issue 16: tools, tool_choice and response_format through the official `openai` client against a real Ember
server (SmolLM2 on our engine, grammar-constrained): a call round trip, streamed tool-call deltas reassembled
into the same call, named / none / required choices, `parse()` into a pydantic model, valid JSON over a set
of schemas, and malformed requests refused with a 400 that says why."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import BaseModel

from .conftest import LiveServer

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]

WEATHER: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
ADD: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {}) for t in TOOLS}
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: Any, embedder: Any) -> Any:
    from ember.platform.server.run import build_state
    from ember.platform.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("tools"), server={"max_tokens": 48})
    s = LiveServer(build_state(settings, engine, "smollm2", lambda spec: embedder))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _pairs(message: Any) -> list[tuple[str, str]]:
    """(name, arguments) of each function call of a reply message."""
    return [(c.function.name, c.function.arguments) for c in message.tool_calls or []]


def _valid_call(name: str, arguments: str) -> dict[str, Any]:
    assert name in SCHEMAS
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS, tool_choice="required",
                                       temperature=0, max_tokens=100)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    name, arguments = _pairs(choice.message)[0]
    assert name == "get_weather" and _valid_call(name, arguments)["city"] == "Paris"

    # the call and its result go back into the conversation; the model answers from the result (under "auto"
    # SmolLM2 tends to call again, so the test asks for the answer with "none")
    history: list[Any] = [*ASK, choice.message.model_dump(exclude_none=True),
                          *[{"role": "tool", "tool_call_id": c.id, "content": '{"temperature": 21, "sky": "sunny"}'}
                            for c in choice.message.tool_calls]]
    final = client.chat.completions.create(model="smollm2", messages=history, tools=TOOLS, tool_choice="none",
                                           temperature=0, max_tokens=32)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_streamed_tool_call_deltas_reassemble_into_the_same_call(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "smollm2", "messages": ASK, "tools": TOOLS, "tool_choice": "required",
                              "temperature": 0, "max_tokens": 100}
    whole = client.chat.completions.create(**kwargs)
    calls: dict[int, dict[str, Any]] = {}
    reasons, pieces = [], 0
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasons.append(chunk.choices[0].finish_reason)
        for d in delta.tool_calls or []:
            pieces += 1
            entry = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
            if d.id:  # id and name come once, first
                assert entry["id"] is None and d.function is not None and d.function.name
                entry["id"], entry["name"] = d.id, d.function.name
            assert entry["id"] is not None
            entry["arguments"] += (d.function.arguments if d.function else None) or ""
    assert reasons[-1] == "tool_calls"
    assert whole.choices[0].message.tool_calls
    expected = _pairs(whole.choices[0].message)
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == expected
    assert pieces > len(calls) + 1  # the arguments arrived in fragments, as OpenAI streams them

    # the client's own stream helper assembles the same call
    with client.chat.completions.stream(**kwargs) as stream:
        done = stream.get_final_completion()
    assert done.choices[0].message.tool_calls
    assert _pairs(done.choices[0].message) == expected


def test_tool_choice_named_none_and_auto(client: openai.OpenAI) -> None:
    named = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is 2 plus 3?"}], tools=TOOLS, temperature=0,
        tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=48)
    calls = _pairs(named.choices[0].message)
    assert len(calls) == 1 and calls[0][0] == "add"
    _valid_call(*calls[0])

    none = client.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS, tool_choice="none",
                                          temperature=0, max_tokens=12)
    assert none.choices[0].message.content and not none.choices[0].message.tool_calls
    assert none.choices[0].finish_reason in ("stop", "length")

    auto = client.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS, temperature=0, max_tokens=48)
    message = auto.choices[0].message
    assert message.content or message.tool_calls  # the model chooses; whatever it calls is valid
    for name, arguments in _pairs(message):
        _valid_call(name, arguments)


class City(BaseModel):
    name: str
    country: str
    population: int
    capital: bool


def test_parse_into_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(
        model="smollm2", messages=[{"role": "user", "content": "Describe the city of Paris."}], response_format=City,
        temperature=0, max_tokens=64)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.name


class Step(BaseModel):
    action: Literal["search", "answer"]
    confidence: float
    tags: list[str]


SCHEMA_SET: list[dict[str, Any]] = [
    {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}, "ok": {"type": "boolean"}},
     "required": ["n", "ok"]},
    {"type": "object", "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                                                 "minItems": 1, "maxItems": 3}}, "required": ["colors"]},
    {"type": "object", "properties": {"person": {"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]},
        "note": {"type": ["string", "null"]}}, "required": ["person", "note"]},
    {"type": "object", "properties": {"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                                      "score": {"type": "number"}}, "required": ["date", "score"]},
    Step.model_json_schema(),
]
PROMPTS = ["Answer in JSON: what is the capital of Italy?", "Pick a digit and say if it is fine.",
           "List some colors you like.", "Describe a person.", "Give today's date and a score.",
           "Decide the next step for: find a cheap flight."]


def test_structured_outputs_are_always_valid_json(client: openai.OpenAI) -> None:
    for schema, prompt in zip(SCHEMA_SET, PROMPTS, strict=True):
        for stream in (False, True):
            kwargs: dict[str, Any] = {
                "model": "smollm2", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": 96, "response_format": {"type": "json_schema", "json_schema": {
                    "name": "out", "schema": schema, "strict": True}}}
            if stream:
                chunks = list(client.chat.completions.create(**kwargs, stream=True))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                text = client.chat.completions.create(**kwargs).choices[0].message.content or ""
            jsonschema.validate(json.loads(text), schema)
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Who are you?"}],
                                       response_format={"type": "json_object"}, temperature=0, max_tokens=48)
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "nonsense"}}}}}]}, "tools.0.function.parameters", "not a valid JSON schema"),
    ({"tools": [ADD, ADD]}, "tools", "two tools are named 'add'"),
    ({"tools": [ADD], "tool_choice": "sometimes"}, "tool_choice", ""),
    ({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "mul"}}}, "tool_choice",
     "'mul', which is not among the tools"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools.0.function.name", "1-64 letters"),
    ({"tools": [{"type": "retrieval"}]}, "tools.0.type", ""),
    ({"tool_choice": "required"}, "tool_choice", "needs at least one tool"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}},
     "", "Unimplemented keys"),
]


@pytest.mark.parametrize(("extra", "param", "reason"), BAD)
def test_malformed_tools_are_400_with_the_reason(server: LiveServer, extra: dict[str, Any], param: str,
                                                 reason: str) -> None:
    with server.client() as http:
        r = http.post("/v1/chat/completions", json={"model": "smollm2", "messages": ASK, "max_tokens": 4, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert reason in error["message"]
    if param:
        assert error["param"] == param, error


def test_the_openai_backend_passes_tools_and_formats_through(server: LiveServer) -> None:
    """`OpenAIBackend` (any OpenAI-compatible server; here Ember's own) sends tools, tool_choice and
    response_format and reads `tool_calls` back, streamed and not."""
    from ember.model.backends.openai import OpenAIBackend
    from ember.model.sampling_params import SamplingParams
    from ember.model.tool_calls import ChatOptions

    backend = OpenAIBackend(server.url + "/v1", "smollm2")
    assert backend.capabilities.tool_calls and backend.capabilities.structured_outputs
    options = ChatOptions.from_openai([dict(t) for t in TOOLS], {"type": "function", "function": {"name": "add"}})
    params = SamplingParams(max_tokens=48, temperature=0)
    messages = [{"role": "user", "content": "What is 2 plus 3?"}]
    try:
        done = backend.chat(messages, params, options)
        assert done.finish_reason == "tool_calls" and [c.name for c in done.tool_calls] == ["add"]
        _valid_call("add", done.tool_calls[0].arguments)
        deltas = list(backend.chat_stream(messages, params, options))
        final = deltas[-1].completion
        assert final is not None and final.finish_reason == "tool_calls"
        assert [(c.name, c.arguments) for c in final.tool_calls] == [(c.name, c.arguments) for c in done.tool_calls]
        fmt = ChatOptions.from_openai(response_format={"type": "json_schema", "json_schema": {
            "name": "n", "schema": SCHEMA_SET[1], "strict": True}})
        jsonschema.validate(json.loads(backend.chat(messages, params, fmt).text), SCHEMA_SET[1])
    finally:
        backend.close()


def test_ember_rag_with_tools_answers_or_calls(make_server: Any) -> None:
    """`ember-rag:NAME` keeps answering from the collection without tools; with tools, the passages are in the
    prompt and the model calls (here: forced) or answers, and the citations still come back."""
    from .conftest import upload_docs

    server = make_server()
    with server.client() as http:
        upload_docs(http)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    q: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How do I create an API key for the server?"}]
    plain = client.chat.completions.create(model="ember-rag:docs", messages=q, max_tokens=12, temperature=0)
    assert plain.choices[0].message.content and not plain.choices[0].message.tool_calls
    search: ChatCompletionToolParam = {"type": "function", "function": {
        "name": "open_ticket", "description": "Ask a human for help.",
        # maxLength: the grammar closes the string in time; SmolLM2 under the RAG prompt otherwise fills the
        # default bound with digits and runs out of max_tokens first
        "parameters": {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 60}},
                       "required": ["summary"]}}}
    called = client.chat.completions.create(model="ember-rag:docs", messages=q, tools=[search], tool_choice="required",
                                            parallel_tool_calls=False, max_tokens=128, temperature=0)
    calls = _pairs(called.choices[0].message)
    assert called.choices[0].finish_reason == "tool_calls" and calls and calls[0][0] == "open_ticket"
    assert json.loads(calls[0][1])["summary"]
    assert (called.model_extra or {})["citations"]  # the passages were in the prompt

    streamed = list(client.chat.completions.create(model="ember-rag:docs", messages=q, tools=[search],
                                                   tool_choice="required", parallel_tool_calls=False, max_tokens=128,
                                                   temperature=0, stream=True))
    assert any(c.choices and c.choices[0].delta.tool_calls for c in streamed)
    assert streamed[-1].choices[0].finish_reason == "tool_calls"

    history: list[Any] = [*q, called.choices[0].message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": called.choices[0].message.tool_calls[0].id,  # type: ignore[index]
                           "content": "Ticket 42 opened."}]
    final = client.chat.completions.create(model="ember-rag:docs", messages=history, tools=[search],
                                           tool_choice="none", max_tokens=16, temperature=0)
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
