"""Issue 16: the frameworks people build on, pointed at a real Ember server (SmolLM2 on our engine): LangChain's
`ChatOpenAI(base_url=ember)` with `bind_tools` and `with_structured_output`, and the OpenAI Agents SDK's
chat-completions model running one tool."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, Field

from .conftest import LiveServer

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]


def openai_agents() -> ModuleType:
    """The OpenAI Agents SDK's `agents` package. From the repo root, `import agents` finds Ember's own agents/
    folder (installed, it is `ember.agents`), so the root leaves sys.path while the SDK is imported."""
    ours = [p for p in sys.path if Path(p or ".").resolve() == REPO]
    mine = sys.modules.get("agents")
    if mine is not None and Path(getattr(mine, "__file__", "") or "").resolve().parent == REPO / "agents":
        del sys.modules["agents"]
    for p in ours:
        sys.path.remove(p)
    try:
        return importlib.import_module("agents")
    finally:
        sys.path[:0] = ours


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: Any, embedder: Any) -> Iterator[LiveServer]:
    from ember.platform.server.run import build_state
    from ember.platform.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("clients"), server={"max_tokens": 64})
    s = LiveServer(build_state(settings, engine, "smollm2", lambda spec: embedder))
    yield s
    s.stop()


def get_weather(city: str, unit: str = "celsius") -> str:
    """The current weather in a city.

    Args:
        city: the city's name, e.g. Paris
        unit: celsius or fahrenheit
    """
    return f"Sunny and 21 degrees {unit} in {city}."


class City(BaseModel):
    """A city and the country it is in."""

    name: str = Field(description="the city's name")
    country: str = Field(description="the country it is in")


def test_langchain_chat_openai_binds_tools_and_structured_output(server: LiveServer) -> None:
    from langchain_core.messages import ToolMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=server.url + "/v1", api_key="unused", model="smollm2", temperature=0,
                     max_completion_tokens=64, max_retries=0)
    question = "What is the weather in Paris?"
    ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(question)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather"
    assert isinstance(ai.tool_calls[0]["args"]["city"], str)

    # streamed: LangChain's chunks add up to the same call
    chunks = list(llm.bind_tools([get_weather], tool_choice="get_weather").stream(question))
    total: Any = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [(c["name"], c["args"]) for c in ai.tool_calls]

    # the result goes back as a ToolMessage and the model answers
    result = ToolMessage(get_weather(**ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"])
    answer = llm.bind_tools([get_weather], tool_choice="none").invoke([("user", question), ai, result])
    assert isinstance(answer.content, str) and answer.content

    city = llm.with_structured_output(City).invoke("Name a big city in France.")  # json_schema, strict
    assert isinstance(city, City) and city.name
    city = llm.with_structured_output(City, method="function_calling").invoke("Name a big city in Japan.")
    assert isinstance(city, City) and city.name
    raw = llm.bind(response_format={"type": "json_object"}).invoke("Name a big city in Italy, as JSON.")
    assert isinstance(json.loads(str(raw.content)), dict)


def test_openai_agents_sdk_runs_one_tool(server: LiveServer) -> None:
    from openai import AsyncOpenAI

    sdk: Any = openai_agents()
    sdk.set_tracing_disabled(True)
    calls: list[str] = []

    @sdk.function_tool
    def weather(city: str) -> str:
        """The current weather in a city.

        Args:
            city: the city's name
        """
        calls.append(city)
        return f"Sunny and 21 degrees in {city}."

    model = sdk.OpenAIChatCompletionsModel(model="smollm2", openai_client=AsyncOpenAI(
        base_url=server.url + "/v1", api_key="unused", max_retries=0))
    agent = sdk.Agent(name="weather", instructions="Answer questions about the weather with the weather tool.",
                      model=model, tools=[weather], tool_use_behavior="stop_on_first_tool",
                      model_settings=sdk.ModelSettings(temperature=0, max_tokens=64, tool_choice="required"))
    result = sdk.Runner.run_sync(agent, "What is the weather in Paris?", max_turns=3)
    assert len(calls) >= 1 and calls[0]
    assert result.final_output == f"Sunny and 21 degrees in {calls[0]}."
    items = [json.loads(i.raw_item.arguments) for i in result.new_items if i.type == "tool_call_item"]
    assert items and items[0]["city"] == calls[0]
