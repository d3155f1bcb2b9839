"""`EmberBackend`: the engine shared by concurrent callers through the `Backend` Protocol."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from ember.model.backends.base import Backend
from ember.model.backends.ember import EmberBackend
from ember.model.config import LlamaConfig
from ember.model.engine.llm_engine import EngineConfig
from ember.model.loader import build_model
from ember.model.sampling_params import InvalidRequestError, SamplingParams
from ember.model.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def backend(smollm2_folder: Path):
    """A random 2-layer model behind SmolLM2's tokenizer: the backend's plumbing, fast."""
    tok = Tokenizer.load(smollm2_folder)
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=None)
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config.to_hf())).eval()
    b = EmberBackend(build_model(config, dict(ref.state_dict()), "random"), tok,
                     EngineConfig(kv_cache_bytes=16 << 20, max_num_seqs=16))
    yield b
    b.close()


def test_is_a_backend(backend: EmberBackend) -> None:
    assert isinstance(backend, Backend)


def test_stream_concatenates_to_generate(backend: EmberBackend) -> None:
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    [full] = backend.generate(["Hello there"], params)
    deltas = list(backend.stream("Hello there", params))
    assert "".join(d.text for d in deltas) == full.text
    assert [t for d in deltas for t in d.token_ids] == full.token_ids
    assert deltas[-1].finish_reason == "length" and deltas[-1].completion is not None
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_closing_a_stream_cancels_and_frees_blocks(backend: EmberBackend) -> None:
    stream = backend.stream("A long story:", SamplingParams(temperature=0, max_tokens=400, ignore_eos=True))
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.time() + 10
    while backend.engine.blocks.num_used and time.time() < deadline:
        time.sleep(0.01)
    assert backend.engine.blocks.num_used == 0 and not backend.engine.has_unfinished()


def test_concurrent_callers_are_batched(backend: EmberBackend) -> None:
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    prompts = [f"request number {i}" for i in range(12)]
    expected = {p: backend.generate([p], params)[0].token_ids for p in prompts}
    results: dict[str, list[int]] = {}
    peak = [0]

    def call(p: str) -> None:
        results[p] = backend.generate([p], params)[0].token_ids

    threads = [threading.Thread(target=call, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], len(backend.engine.scheduler.running))
        time.sleep(0.001)
    assert results == expected
    assert peak[0] > 1  # requests from different threads ran in the same batch


def test_chat_and_count_tokens(backend: EmberBackend) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    out = backend.chat(messages, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    prompt = backend.tokenizer.apply_chat_template(messages)
    assert out.prompt_tokens == backend.count_tokens(prompt) and out.completion_tokens == 5


def test_invalid_request_raises_in_the_caller(backend: EmberBackend) -> None:
    with pytest.raises(InvalidRequestError, match="context is 512"):
        backend.generate([list(range(1000))], SamplingParams(max_tokens=4))
    with pytest.raises(InvalidRequestError, match="empty prompt"):
        list(backend.stream("", SamplingParams(max_tokens=4)))
    [ok] = backend.generate(["still serving"], SamplingParams(temperature=0, max_tokens=3))
    assert ok.completion_tokens >= 1
