"""`OpenAIBackend` against a real vLLM OpenAI-compatible server (from `.venv-vllm`) on the SmolLM2 folder.

The server starts once for the module on a free loopback port and is always killed (its whole process
group: vLLM's engine runs in child processes). Greedy outputs are checked against transformers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ember.model.backends.base import Delta
from ember.model.backends.openai import OpenAIBackend
from ember.model.sampling_params import SamplingParams
from ember.model.tokenizer import Tokenizer

pytestmark = [pytest.mark.smollm2, pytest.mark.vllm]

MODEL = "smollm2"
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Once upon a time, in a land far away, there lived a"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
N = 16
GREEDY = SamplingParams(max_tokens=N, temperature=0, ignore_eos=True)
START_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def server(vllm_python: Path, vllm_env: dict[str, str], smollm2_hf: Path, module_port: int,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [str(vllm_python), "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", str(smollm2_hf),
           "--served-model-name", MODEL, "--dtype", "float32", "--max-model-len", "2048",
           "--host", "127.0.0.1", "--port", str(module_port)]
    base = f"http://127.0.0.1:{module_port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=vllm_env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited ({proc.returncode}):\n{log.read_text()[-5000:]}")
            try:
                if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-5000:]}")
            time.sleep(1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def backend(server: str) -> Iterator[OpenAIBackend]:
    b = OpenAIBackend(f"{server}/v1", MODEL, timeout=120)
    yield b
    b.close()


@pytest.fixture(scope="module")
def tok(smollm2_folder: Path) -> Tokenizer:
    return Tokenizer.load(smollm2_folder)


def collect(deltas: Iterator[Delta]) -> list[Delta]:
    out = list(deltas)
    assert out and out[-1].finish_reason is not None and out[-1].completion is not None
    assert all(d.finish_reason is None for d in out[:-1])
    return out


def metric(base: str, name: str, **labels: str) -> float:
    """One sample of the server's Prometheus /metrics."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} {labels}")


def test_concurrent_batch_is_greedy_like_transformers(backend: OpenAIBackend, tok: Tokenizer, hf_greedy: Any) -> None:
    ids = [tok.encode(p) for p in PROMPTS]
    got = backend.generate([*PROMPTS, ids[0]], GREEDY)  # the last one as token ids
    for c, prompt_ids in zip(got, [*ids, ids[0]], strict=True):
        assert c.prompt_tokens == len(prompt_ids)  # in order: each answer belongs to its prompt
        assert c.token_ids == hf_greedy(prompt_ids, N)[0]
        assert c.text == tok.decode(c.token_ids)
        assert c.finish_reason == "length"
        assert c.timings.total_s > 0


def test_chat_uses_the_same_template_as_ours(backend: OpenAIBackend, tok: Tokenizer, hf_greedy: Any) -> None:
    ids = tok.encode(tok.apply_chat_template(CHAT), add_special_tokens=False)
    c = backend.chat(CHAT, GREEDY)
    assert c.prompt_tokens == len(ids)
    assert c.token_ids == hf_greedy(ids, N)[0]
    assert c.text == tok.decode(c.token_ids)


def test_stream_concatenates_to_the_completion(backend: OpenAIBackend) -> None:
    whole = backend.generate([PROMPTS[1]], GREEDY)[0]
    deltas = collect(backend.stream(PROMPTS[1], GREEDY))
    final = deltas[-1].completion
    assert final is not None and len(deltas) > 2
    assert "".join(d.text for d in deltas) == final.text == whole.text
    assert [t for d in deltas for t in d.token_ids] == final.token_ids == whole.token_ids
    assert final.prompt_tokens == whole.prompt_tokens
    assert final.finish_reason == "length"
    assert 0 < final.timings.first_token_s <= final.timings.total_s


def test_chat_stream_concatenates_to_the_chat(backend: OpenAIBackend) -> None:
    whole = backend.chat(CHAT, GREEDY)
    deltas = collect(backend.chat_stream(CHAT, GREEDY))
    assert "".join(d.text for d in deltas) == whole.text
    final = deltas[-1].completion
    assert final is not None and final.token_ids == whole.token_ids and final.prompt_tokens == whole.prompt_tokens


def test_closing_a_stream_cancels_it_on_the_server(backend: OpenAIBackend, server: str) -> None:
    finished = metric(server, "vllm:request_success_total", finished_reason="length")
    long = SamplingParams(max_tokens=2000, temperature=0, ignore_eos=True)  # tens of seconds if left to run
    it = backend.stream(PROMPTS[2], long)
    assert next(it).text and next(it).text
    assert metric(server, "vllm:num_requests_running") == 1
    it.close()
    deadline = time.monotonic() + 10
    while metric(server, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "the server still runs the request after its stream was closed"
        time.sleep(0.2)
    assert metric(server, "vllm:request_success_total", finished_reason="length") == finished


def test_count_tokens_uses_the_servers_tokenizer(backend: OpenAIBackend, tok: Tokenizer) -> None:
    assert backend.tokenizer is None
    for text in [*PROMPTS, "unicode: héllo wörld — 你好 🤖", "<|im_start|>user\nhi<|im_end|>"]:
        assert backend.count_tokens(text) == len(tok.encode(text, add_special_tokens=False))


def test_stop_strings_and_stop_token_ids(backend: OpenAIBackend, hf_greedy: Any, tok: Tokenizer) -> None:
    full = tok.decode(hf_greedy(tok.encode(PROMPTS[0]), N)[0])
    assert "." in full
    c = backend.generate([PROMPTS[0]], SamplingParams(max_tokens=N, temperature=0, stop=["."]))[0]
    assert c.finish_reason == "stop" and c.text == full.split(".")[0]
    first = hf_greedy(tok.encode(PROMPTS[0]), N)[0][0]
    c = backend.generate([PROMPTS[0]], SamplingParams(max_tokens=N, temperature=0, stop_token_ids=[first]))[0]
    assert c.finish_reason == "stop" and c.completion_tokens <= 1


def test_length_and_eos_finish_reasons(backend: OpenAIBackend) -> None:
    c = backend.generate([PROMPTS[2]], SamplingParams(max_tokens=5, temperature=0))[0]
    assert c.finish_reason == "length" and c.completion_tokens == 5
    natural = backend.chat(CHAT, SamplingParams(max_tokens=64, temperature=0))
    assert natural.finish_reason == "stop" and natural.completion_tokens < 64
    forced = backend.chat(CHAT, SamplingParams(max_tokens=natural.completion_tokens + 8, temperature=0,
                                               ignore_eos=True))
    assert forced.finish_reason == "length" and forced.completion_tokens == natural.completion_tokens + 8


def test_vllm_sampling_extensions_reach_the_server(backend: OpenAIBackend) -> None:
    greedy = backend.generate([PROMPTS[2]], GREEDY)[0].token_ids
    for extra in ({"top_k": 1}, {"min_p": 1.0}):
        c = backend.generate([PROMPTS[2]], SamplingParams(max_tokens=N, temperature=1.0, ignore_eos=True, **extra))[0]
        assert c.token_ids == greedy, extra  # both leave only the most likely token


def test_seed_makes_sampling_reproducible(backend: OpenAIBackend) -> None:
    a, b, other = backend.generate([PROMPTS[2]] * 3, [SamplingParams(max_tokens=N, temperature=1.0, seed=s)
                                                      for s in (5, 5, 6)])
    assert a.token_ids == b.token_ids != other.token_ids


def test_logprobs(backend: OpenAIBackend, server: str, smollm2_folder: Path, tok: Tokenizer) -> None:
    params = SamplingParams(max_tokens=6, temperature=0, logprobs=2)
    local = OpenAIBackend(server, MODEL, tokenizer=smollm2_folder)  # decodes token texts itself
    try:
        completions = [backend.generate([PROMPTS[0]], params)[0], backend.chat(CHAT, params),
                       local.generate([PROMPTS[0]], params)[0]]
    finally:
        local.close()
    for c in completions:
        assert c.logprobs is not None and len(c.logprobs) == 6
        for lp, tid in zip(c.logprobs, c.token_ids, strict=True):
            assert lp.token_id == tid and lp.logprob <= 0
            assert len(lp.top) == 2 and max(lp.top, key=lambda k: lp.top[k]) == tid
    for c in completions[1:]:  # the chat's token texts come from the server's bytes, the last from our tokenizer
        assert c.logprobs is not None
        assert [lp.token for lp in c.logprobs] == [tok.decode([t], skip_special_tokens=False) for t in c.token_ids]
