"""Issue 16: function calling and structured output through Ember's own framework adapters, on SmolLM2 with the
grammar: `ChatEmber.bind_tools` / `with_structured_output` (LangChain) and `EmberLLM` as a LlamaIndex
`FunctionCallingLLM` (`chat_with_tools`, `predict_and_call`)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from ember.model.backends.ember import EmberBackend

pytestmark = [pytest.mark.smollm2]


def get_weather(city: str) -> str:
    """The current weather in a city.

    Args:
        city: the city's name, e.g. Paris
    """
    return f"Sunny and 21 degrees in {city}."


class City(BaseModel):
    """A city and the country it is in."""

    name: str = Field(description="the city's name")
    country: str = Field(description="the country it is in")


def test_chat_ember_binds_tools_and_structured_output(backend: EmberBackend) -> None:
    from langchain_core.messages import AIMessageChunk, ToolMessage

    from ember.retrieval.integrations.langchain import ChatEmber

    llm = ChatEmber(backend=backend, max_tokens=96)
    question = "What is the weather in Paris?"
    ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(question)
    assert len(ai.tool_calls) == 1 and ai.tool_calls[0]["name"] == "get_weather"
    assert isinstance(ai.tool_calls[0]["args"]["city"], str) and ai.tool_calls[0]["id"]

    chunks = list(llm.bind_tools([get_weather], tool_choice="any").stream(question))
    total = sum(chunks[1:], chunks[0])
    assert isinstance(total, AIMessageChunk) and total.tool_calls
    assert total.tool_calls[0]["name"] == "get_weather" and total.response_metadata["finish_reason"] == "tool_calls"

    result = ToolMessage(get_weather(**ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"])
    answer = llm.bind_tools([get_weather], tool_choice="none").invoke([("user", question), ai, result])
    assert isinstance(answer.content, str) and answer.content and not answer.tool_calls

    city = llm.with_structured_output(City).invoke("Name a big city in France.")  # function calling
    assert isinstance(city, City) and city.name
    city = llm.with_structured_output(City, method="json_schema").invoke("Name a big city in Japan.")
    assert isinstance(city, City) and city.name


def test_llamaindex_ember_llm_calls_functions(backend: EmberBackend) -> None:
    from llama_index.core.tools import FunctionTool

    from ember.retrieval.integrations.llamaindex import EmberLLM

    llm = EmberLLM(backend, num_output=96)
    assert llm.metadata.is_function_calling_model
    tool = FunctionTool.from_defaults(fn=get_weather)
    response = llm.chat_with_tools([tool], user_msg="What is the weather in Paris?", tool_required=True)
    calls = llm.get_tool_calls_from_response(response)
    assert len(calls) == 1 and calls[0].tool_name == "get_weather" and isinstance(calls[0].tool_kwargs["city"], str)

    out = llm.predict_and_call([tool], user_msg="What is the weather in Paris?", tool_required=True)
    assert out.sources and out.sources[0].tool_name == "get_weather"
    assert str(out) == get_weather(**calls[0].tool_kwargs)

    streamed = list(llm.stream_chat_with_tools([tool], user_msg="What is the weather in Paris?", tool_required=True))
    assert [c.tool_name for c in llm.get_tool_calls_from_response(streamed[-1])] == ["get_weather"]
