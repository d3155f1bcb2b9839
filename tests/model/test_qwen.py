"""The pulled Qwen2.5-Coder GGUFs (0.5B, 1.5B; Q4_K_M) through our loader vs `transformers`' own GGUF loader.

Too big for `make test`: these run when the models are pulled (`make test-models` pulls them first);
without them they skip with the command to run.
"""

from __future__ import annotations

import gc
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ember.model.engine.llm_engine import EngineConfig, LLMEngine
from ember.model.loader import LoadedModel, load
from ember.model.registry import GGUF_NAME, REGISTRY, is_pulled
from ember.model.sampling_params import SamplingParams

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.qwen

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".ember" / "models"
QWEN = ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWrite a haiku about rain.<|im_end|>\n<|im_start|>assistant\n",
]
STRINGS = [
    "Hello, world!", "  leading spaces", "trailing spaces   ", "tabs\tand\nnewlines\n\n\n",
    "unicode: héllo wörld — “quotes” 你好 日本語 🤖🚀 ñ ß Ω", "naïve café (NFC vs NFD: é é)",
    "numbers 2024-11-22 3.14159 1,000,000 0x1F 1234567890", "code: def f(x: int) -> int:\n    return x ** 2  # sq\n",
    "    indented\n        more\r\n", "don't we'll I'M THEY'RE", "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
    "a" * 300, "",
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour.\nJust one."}],
]


@pytest.fixture(scope="module", params=QWEN)
def gguf(request: pytest.FixtureRequest) -> Iterator[Path]:
    name = request.param
    if not is_pulled(MODELS_DIR, name):
        pytest.skip(f"{name} is not pulled: run `make test-models` (or `ember models pull {name}`)")
    yield MODELS_DIR / name / GGUF_NAME
    gc.collect()


@pytest.fixture(scope="module")
def ours(gguf: Path) -> Iterator[LoadedModel]:
    loaded = load(gguf, dtype="float32")
    yield loaded
    del loaded
    gc.collect()


@pytest.fixture(scope="module")
def reference(gguf: Path) -> Iterator[tuple[Any, Any]]:
    kw = dict(gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw).eval()
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, **kw)
    yield model, tok
    del model
    gc.collect()


def test_pulled_folder_is_the_shipped_file_with_its_licence(gguf: Path) -> None:
    from ember.model.registry import sha256_file

    spec = REGISTRY[gguf.parent.name]
    assert gguf.stat().st_size == spec.size and sha256_file(gguf) == spec.sha256
    assert "Apache License" in (gguf.parent / "LICENSE").read_text()
    assert spec.upstream.split(" ")[0] in (gguf.parent / "NOTICE").read_text()


def test_config_is_qwen2(ours: LoadedModel) -> None:
    c = ours.model.config
    assert c.model_type == "qwen2" and c.attention_bias and not c.o_bias and c.rope_theta == 1e6
    assert c.vocab_size == 151936 and c.max_position_embeddings == 32768
    assert ours.model.model.layers[0].self_attn.o_proj.bias is None
    assert {151645, 151643} <= set(c.eos_token_ids)  # <|im_end|> and <|endoftext|>
    assert not ours.tokenizer.add_bos_token


def test_logits_match(ours: LoadedModel, reference: tuple[Any, Any]) -> None:
    model, tok = reference
    for prompt in [*PROMPTS, tok.apply_chat_template(CONVERSATIONS[1], tokenize=False)]:
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            a, b = ours.model(ids), model(ids).logits
        diff = (a - b).abs().max().item()
        print(f"{ours.source.parent.name}: {prompt[:24]!r} max |logit diff| {diff:.2e}")
        assert diff < 1e-3 * max(1.0, b.abs().max().item()), f"{prompt!r}: max |logit diff| {diff:.2e}"


def test_greedy_64_tokens_identical(ours: LoadedModel, reference: tuple[Any, Any]) -> None:
    model, tok = reference
    engine = LLMEngine(ours.model, ours.tokenizer, EngineConfig(kv_cache_bytes=128 << 20))
    for prompt in PROMPTS[1:]:
        ids = tok(prompt)["input_ids"]
        saved, model.generation_config.eos_token_id = model.generation_config.eos_token_id, None
        try:  # no early stop: all 64 tokens are compared
            expected = model.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False)
        finally:
            model.generation_config.eos_token_id = saved
        [got] = engine.generate([ids], SamplingParams(temperature=0, max_tokens=64, ignore_eos=True))
        assert got.token_ids == expected[0, len(ids):].tolist()


def test_tokenizer_ids_identical(ours: LoadedModel, reference: tuple[Any, Any]) -> None:
    _, tok = reference
    for s in STRINGS:
        ids = ours.tokenizer.encode(s)
        assert ids == tok(s)["input_ids"], s
        assert ours.tokenizer.decode(ids, skip_special_tokens=False) == tok.decode(ids, skip_special_tokens=False)


def test_chat_template_identical(ours: LoadedModel, reference: tuple[Any, Any]) -> None:
    _, tok = reference
    for conv in CONVERSATIONS:
        for gen in (True, False):
            assert ours.tokenizer.apply_chat_template(conv, add_generation_prompt=gen) == \
                tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
    with_tools = ours.tokenizer.apply_chat_template(CONVERSATIONS[0], tools=TOOLS)
    assert with_tools == tok.apply_chat_template(CONVERSATIONS[0], tools=TOOLS, tokenize=False,
                                                 add_generation_prompt=True)
    assert "<tools>" in with_tools and "get_weather" in with_tools


def test_chat_answers_paris(gguf: Path) -> None:
    """`ember chat -m qwen2.5-coder-0.5b`, typed into as a user would."""
    if gguf.parent.name != "qwen2.5-coder-0.5b":
        pytest.skip("run once, on the default candidate")
    env = {**os.environ, "EMBER_DATA_DIR": str(REPO / ".ember")}
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ember"), "chat", "-m", "qwen2.5-coder-0.5b",
                           "--max-tokens", "32"], input="What is the capital of France?\n/exit\n",
                          capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout, proc.stdout
