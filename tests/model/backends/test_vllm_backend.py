"""`VLLMBackend` on the real SmolLM2 folder (float32) vs `transformers.generate` computed here.

vLLM runs in `.venv-vllm` (its pins fight this environment's): one subprocess starts one engine and runs
every case below through it (`vllm_worker.py`), and each test checks its part of the results. The
reference (greedy ids, logits) comes from transformers in this environment, on the same folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ember.model.errors import EmberError
from ember.model.tokenizer import Tokenizer

pytestmark = [pytest.mark.smollm2, pytest.mark.vllm]

WORKER = Path(__file__).with_name("vllm_worker.py")
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a land far away, there lived a",
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
N = 24  # new tokens per greedy case
GREEDY = {"max_tokens": N, "temperature": 0.0, "ignore_eos": True}
SAMPLED = {"max_tokens": 16, "temperature": 1.0}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
CASES: list[dict[str, Any]] = [
    {"name": "greedy", "op": "generate", "prompts": PROMPTS, "params": {**GREEDY, "logprobs": 3}},
    {"name": "chat", "op": "chat", "messages": CHAT, "params": GREEDY},
    {"name": "chat_eos", "op": "chat", "messages": CHAT, "params": {"max_tokens": 64, "temperature": 0.0}},
    {"name": "stop_string", "op": "generate", "prompts": PROMPTS[:1],
     "params": {"max_tokens": N, "temperature": 0.0, "stop": ["."]}},
    {"name": "seeded", "op": "generate", "prompts": [PROMPTS[2]] * 3,
     "params": [{**SAMPLED, "seed": 7}, {**SAMPLED, "seed": 7}, {**SAMPLED, "seed": 8}]},
    {"name": "seeded_again", "op": "generate", "prompts": [PROMPTS[2]], "params": {**SAMPLED, "seed": 7}},
    {"name": "stream", "op": "stream", "prompt": PROMPTS[1], "params": GREEDY},
    {"name": "stream_closed", "op": "stream", "prompt": PROMPTS[2], "take": 2,
     "params": {"max_tokens": 1000, "temperature": 0.0, "ignore_eos": True}},
    {"name": "after_close", "op": "generate", "prompts": PROMPTS[:1], "params": GREEDY},
    {"name": "count", "op": "count_tokens", "text": PROMPTS[2]},
    {"name": "too_long", "op": "generate", "prompts": [[504] * 3000], "params": GREEDY},  # max_model_len is 2048
    {"name": "after_error", "op": "generate", "prompts": PROMPTS[:1], "params": GREEDY},
    {"name": "tool_call", "op": "chat", "messages": [{"role": "user", "content": "What is 2 plus 3?"}],
     "params": {"max_tokens": 48, "temperature": 0.0}, "options": {"tools": [ADD], "tool_choice": "required",
                                                                  "parallel_tool_calls": False}},
    {"name": "json_schema", "op": "chat", "messages": [{"role": "user", "content": "Describe a person."}],
     "params": {"max_tokens": 48, "temperature": 0.0}, "options": {"response_format": {
         "type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}}}},
]


@pytest.fixture(scope="module")
def vllm_results(vllm_python: Path, vllm_env: dict[str, str], smollm2_hf: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("vllm")
    cases, out = work / "cases.json", work / "out.json"
    cases.write_text(json.dumps(CASES))
    proc = subprocess.Popen([str(vllm_python), str(WORKER), str(smollm2_hf), str(cases), str(out)],
                            env=vllm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:  # timed out: end the worker and vLLM's engine processes with it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"vllm worker failed:\n{log[-6000:]}"
    results: dict[str, Any] = json.loads(out.read_text())["results"]
    return results


@pytest.fixture(scope="module")
def tok(smollm2_folder: Path) -> Tokenizer:
    return Tokenizer.load(smollm2_folder)


@pytest.fixture(scope="module")
def reference(hf_greedy: Any, tok: Tokenizer) -> dict[str, Any]:
    chat_ids = tok.encode(tok.apply_chat_template(CHAT), add_special_tokens=False)
    return {"prompts": [hf_greedy(tok.encode(p), N) for p in PROMPTS], "chat_ids": chat_ids,
            "chat": hf_greedy(chat_ids, N)[0], "chat_eos": hf_greedy(chat_ids, 64, stop_at_eos=True)[0]}


def test_greedy_batch_is_token_identical_to_transformers(vllm_results: dict[str, Any], tok: Tokenizer,
                                                         reference: dict[str, Any]) -> None:
    got = vllm_results["greedy"]
    assert len(got) == len(PROMPTS)
    for prompt, c, (want, _) in zip(PROMPTS, got, reference["prompts"], strict=True):
        ids = tok.encode(prompt)
        assert c["token_ids"] == want, prompt
        assert c["text"] == tok.decode(want)
        assert c["prompt_tokens"] == len(ids)
        assert c["finish_reason"] == "length"


def test_logprobs_match_transformers(vllm_results: dict[str, Any], tok: Tokenizer, reference: dict[str, Any]) -> None:
    for c, (_, logprobs) in zip(vllm_results["greedy"], reference["prompts"], strict=True):
        assert len(c["logprobs"]) == N
        for step, (lp, tid) in enumerate(zip(c["logprobs"], c["token_ids"], strict=True)):
            assert lp["token_id"] == tid
            assert lp["token"] == tok.decode([tid], skip_special_tokens=False)
            assert lp["logprob"] == pytest.approx(logprobs[step, tid].item(), abs=2e-3)
            top = {int(k): v for k, v in lp["top"].items()}
            assert sorted(top) == sorted(logprobs[step].topk(3).indices.tolist())
            assert max(top, key=lambda k: top[k]) == tid  # greedy picks the most likely


def test_chat_uses_our_template_and_matches_transformers(vllm_results: dict[str, Any],
                                                         reference: dict[str, Any]) -> None:
    c = vllm_results["chat"]
    assert c["prompt_tokens"] == len(reference["chat_ids"])
    assert c["token_ids"] == reference["chat"]


def test_finish_reasons(vllm_results: dict[str, Any], tok: Tokenizer, reference: dict[str, Any]) -> None:
    want = reference["chat_eos"]
    assert want[-1] == tok.eos_token_id and len(want) < 64  # the reference ends its answer itself
    c = vllm_results["chat_eos"]
    assert c["finish_reason"] == "stop"
    assert c["text"] == tok.decode(want)
    assert c["token_ids"][: len(want) - 1] == want[:-1]
    assert vllm_results["greedy"][0]["finish_reason"] == "length"


def test_stop_string(vllm_results: dict[str, Any], tok: Tokenizer) -> None:
    full = vllm_results["greedy"][0]["text"]
    assert "." in full
    c = vllm_results["stop_string"][0]
    assert c["finish_reason"] == "stop"
    assert c["text"] == full.split(".")[0]


def test_seed_makes_sampling_reproducible(vllm_results: dict[str, Any]) -> None:
    a, b, other = (c["token_ids"] for c in vllm_results["seeded"])
    again = vllm_results["seeded_again"][0]["token_ids"]
    assert len(a) > 0
    assert a == b == again
    assert a != other


def test_stream_matches_generate(vllm_results: dict[str, Any], reference: dict[str, Any]) -> None:
    deltas = vllm_results["stream"]
    want = reference["prompts"][1][0]
    assert len(deltas) > 2 and all(d["finish_reason"] is None for d in deltas[:-1])
    final = deltas[-1]
    assert final["finish_reason"] == "length"
    assert "".join(d["text"] for d in deltas) == final["completion"]["text"] == vllm_results["greedy"][1]["text"]
    assert [t for d in deltas for t in d["token_ids"]] == final["completion"]["token_ids"] == want


def test_closing_a_stream_leaves_the_engine_usable(vllm_results: dict[str, Any]) -> None:
    closed = vllm_results["stream_closed"]
    assert len(closed) == 2 and all(d["finish_reason"] is None for d in closed)
    after = vllm_results["after_close"][0]
    assert after["token_ids"] == vllm_results["greedy"][0]["token_ids"]
    assert after["finish_reason"] == "length"


def test_count_tokens(vllm_results: dict[str, Any], tok: Tokenizer) -> None:
    assert vllm_results["count"] == len(tok.encode(PROMPTS[2], add_special_tokens=False))


def test_a_prompt_vllm_rejects_is_an_invalid_request(vllm_results: dict[str, Any]) -> None:
    assert vllm_results["too_long"]["error"] == "InvalidRequestError"
    assert "2048" in vllm_results["too_long"]["message"]
    assert vllm_results["after_error"][0]["token_ids"] == vllm_results["greedy"][0]["token_ids"]


def test_without_vllm_the_error_says_how_to_install(smollm2_folder: Path) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is importable in this environment")
    from ember.model.backends.vllm import VLLMBackend

    with pytest.raises(EmberError) as e:
        VLLMBackend(smollm2_folder)
    assert "pip install" in (e.value.hint or "")


def test_tools_and_response_format_are_grammar_constrained(vllm_results: dict[str, Any]) -> None:
    """Issue 16: the same prompt and lark grammar as on our engine, through vLLM's guidance backend."""
    import jsonschema

    call = vllm_results["tool_call"]
    assert call["finish_reason"] == "tool_calls" and call["tool_calls"], call
    assert call["tool_calls"][0]["name"] == "add"
    jsonschema.validate(json.loads(call["tool_calls"][0]["arguments"]), ADD["function"]["parameters"])  # type: ignore[index]
    jsonschema.validate(json.loads(vllm_results["json_schema"]["text"]), PERSON)
