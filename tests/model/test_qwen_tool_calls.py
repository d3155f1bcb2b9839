"""Issue 16 on Qwen2.5-Coder-0.5B (`make test-models`): its chat template takes `tools` natively and its
`<tool_call>` / `</tool_call>` are single added tokens, which the grammar must name by id (llguidance does not
match an added token by its text). A forced call and a streamed one come out valid, through the native format."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest

from ember.model.backends.ember import EmberBackend
from ember.model.engine.llm_engine import EngineConfig
from ember.model.sampling_params import SamplingParams
from ember.model.tool_calls import ChatOptions, tag_rules
from tests.conftest import pulled

pytestmark = [pytest.mark.qwen, pytest.mark.slow]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


@pytest.fixture(scope="module")
def qwen() -> Iterator[EmberBackend]:
    b = EmberBackend.from_path(pulled("qwen2.5-coder-0.5b"), config=EngineConfig(kv_cache_bytes=128 << 20,
                                                                                  max_model_len=2048))
    yield b
    b.close()


def test_native_tool_calls_on_qwen(qwen: EmberBackend) -> None:
    assert qwen.capabilities.native_tools
    assert tag_rules(qwen.tokenizer)[0].startswith("<[")  # <tool_call> by token id
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    params = SamplingParams(max_tokens=48, temperature=0)
    for choice in ("required", "auto"):
        done = qwen.chat(messages, params, ChatOptions.from_openai([WEATHER], choice))
        assert done.finish_reason == "tool_calls" and [c.name for c in done.tool_calls] == ["get_weather"], done
        args = json.loads(done.tool_calls[0].arguments)
        jsonschema.validate(args, WEATHER["function"]["parameters"])  # type: ignore[index]
        assert args["city"] == "Paris"
    streamed = list(qwen.chat_stream(messages, params, ChatOptions.from_openai([WEATHER], "required")))
    final = streamed[-1].completion
    assert final is not None and [(c.name, c.arguments) for c in final.tool_calls] == [
        (c.name, c.arguments) for c in done.tool_calls]
