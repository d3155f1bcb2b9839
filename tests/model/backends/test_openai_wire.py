"""The OpenAI wire format without a server: request fields from SamplingParams, SSE framing, logprob shapes."""

from __future__ import annotations

import pytest

from ember.model.backends import openai_wire as wire
from ember.model.backends.sse import iter_sse_data
from ember.model.sampling_params import InvalidRequestError, SamplingParams


def test_defaults_make_a_plain_openai_request() -> None:
    body = wire.request_fields(SamplingParams(), chat=False)
    assert body == {"max_tokens": 256, "temperature": 1.0, "top_p": 1.0, "return_token_ids": True}


def test_every_field_is_mapped() -> None:
    p = SamplingParams(max_tokens=7, temperature=0.5, top_p=0.9, top_k=40, min_p=0.05, repetition_penalty=1.1,
                       presence_penalty=0.5, frequency_penalty=-0.5, stop=["\n\n", "END"], stop_token_ids=[2],
                       ignore_eos=True, seed=3, logprobs=4)
    common = {"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
              "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5, "stop": ["\n\n", "END"],
              "stop_token_ids": [2], "ignore_eos": True, "seed": 3, "return_token_ids": True,
              "return_tokens_as_token_ids": True}
    assert wire.request_fields(p, chat=False) == {**common, "logprobs": 4}
    assert wire.request_fields(p, chat=True) == {**common, "logprobs": True, "top_logprobs": 4}
    # nothing in SamplingParams is dropped: every field is sent, except logits processors, which are refused
    assert set(SamplingParams.__dataclass_fields__) <= {"logprobs", "logits_processors", *common}


def test_logits_processors_are_refused_not_dropped() -> None:
    p = SamplingParams(logits_processors=[lambda ids, logits: logits])
    for chat in (False, True):
        with pytest.raises(InvalidRequestError, match="only on the ember backend"):
            wire.request_fields(p, chat=chat)


def test_finish_reasons() -> None:
    assert [wire.finish_reason(r) for r in ("stop", "length", "abort", "tool_calls", None)] == \
        ["stop", "length", "cancelled", "tool_calls", None]


def test_sse_framing() -> None:
    lines = [": keep-alive", "data: {\"a\": 1}", "", "event: x", "data:two", "data: lines", "", "", "data: [DONE]"]
    assert list(iter_sse_data(lines)) == ['{"a": 1}', "two\nlines", "[DONE]"]


def test_logprob_entries_from_vllm_and_llama_cpp() -> None:
    vllm_completion = {"tokens": ["token_id:7", "token_id:9"], "token_logprobs": [-0.1, -0.2],
                       "top_logprobs": [{"token_id:7": -0.1, "token_id:8": -2.0, "token_id:5": -3.0},
                                        {"token_id:9": -0.2}]}
    got = wire.completion_logprobs(vllm_completion, 2, None)
    assert got is not None
    assert [(lp.token_id, lp.logprob, lp.top) for lp in got] == [(7, -0.1, {7: -0.1, 8: -2.0}), (9, -0.2, {9: -0.2})]
    llama_cpp_chat = {"content": [{"id": 42, "token": "Hi", "logprob": -0.5, "bytes": [72, 105],
                                   "top_logprobs": [{"id": 42, "token": "Hi", "logprob": -0.5}]}]}
    got = wire.chat_logprobs(llama_cpp_chat, 1, None)
    assert got is not None and (got[0].token_id, got[0].token, got[0].top) == (42, "Hi", {42: -0.5})
