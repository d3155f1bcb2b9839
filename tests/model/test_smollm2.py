"""The real default model (SmolLM2-135M-Instruct GGUF) through our loader vs `transformers`' own GGUF loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ember.model.engine.llm_engine import EngineConfig, LLMEngine
from ember.model.loader import LoadedModel, export_hf, load
from ember.model.sampling_params import SamplingParams

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.smollm2

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a land far away, there lived a",
]
STRINGS = [
    "Hello, world!", "  leading spaces", "trailing spaces   ", "tabs\tand\nnewlines\n\n\n",
    "unicode: héllo wörld — “quotes” 你好 日本語 🤖🚀 ñ ß Ω", "numbers 2024-11-22 3.14159 1,000,000 0x1F",
    "code: def f(x: int) -> int:\n    return x ** 2  # square\n", "    indented\n        more", "don't we'll I'M",
    "<|im_start|>user\nhi<|im_end|>\n", "a" * 300, "",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour.\nJust one."}],
]


@pytest.fixture(scope="module")
def ours(smollm2_gguf: Path) -> LoadedModel:
    return load(smollm2_gguf, dtype="float32")


@pytest.fixture(scope="module")
def reference(smollm2_gguf: Path) -> tuple:
    kw = dict(gguf_file=smollm2_gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, dtype=torch.float32, **kw)
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, **kw)
    return model.eval(), tok


def test_logits_match(ours: LoadedModel, reference: tuple) -> None:
    model, tok = reference
    for prompt in [*PROMPTS, tok.apply_chat_template(CONVERSATIONS[1], tokenize=False)]:
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            diff = (ours.model(ids) - model(ids).logits).abs().max().item()
        assert diff < 1e-3, f"{prompt!r}: max |logit diff| {diff:.2e}"


def test_greedy_32_tokens_identical(ours: LoadedModel, reference: tuple) -> None:
    model, tok = reference
    for prompt in PROMPTS[:2]:
        ids = tok(prompt)["input_ids"]
        saved, model.generation_config.eos_token_id = model.generation_config.eos_token_id, None
        try:  # no early stop: the whole 32 tokens are compared, eos included
            expected = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
        finally:
            model.generation_config.eos_token_id = saved
        engine = LLMEngine(ours.model, ours.tokenizer, EngineConfig(kv_cache_bytes=64 << 20))
        [got] = engine.generate([ids], SamplingParams(temperature=0, max_tokens=32, ignore_eos=True))
        assert len(got.token_ids) == 32
        assert got.token_ids == expected[0, len(ids):].tolist()


def test_tokenizer_ids_identical(ours: LoadedModel, reference: tuple) -> None:
    _, tok = reference
    for s in STRINGS:
        ids = ours.tokenizer.encode(s)
        assert ids == tok(s)["input_ids"], s
        assert ours.tokenizer.decode(ids, skip_special_tokens=False) == tok.decode(ids, skip_special_tokens=False)


def test_chat_template_identical(ours: LoadedModel, reference: tuple) -> None:
    _, tok = reference
    for conv in CONVERSATIONS:
        for gen in (True, False):
            assert ours.tokenizer.apply_chat_template(conv, add_generation_prompt=gen) == \
                tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)


def test_export_loads_in_transformers(ours: LoadedModel, tmp_path: Path) -> None:
    folder = export_hf(ours.model, ours.tokenizer, tmp_path / "smollm2-hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= {p.name for p in folder.iterdir()}
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([ours.tokenizer.encode(PROMPTS[0])])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ours.model(ids))
    for s in STRINGS:
        assert tok(s)["input_ids"] == ours.tokenizer.encode(s)
    assert tok.apply_chat_template(CONVERSATIONS[1], tokenize=False, add_generation_prompt=True) == \
        ours.tokenizer.apply_chat_template(CONVERSATIONS[1])
    assert load(folder, dtype="float32").tokenizer.encode(STRINGS[4]) == ours.tokenizer.encode(STRINGS[4])


def test_pulled_folder_exports_exactly_what_the_gguf_says(smollm2_folder: Path, smollm2_hf: Path,
                                                          reference: tuple) -> None:
    """The pulled folder keeps the GGUF as shipped; its float32 export computes the file's own logits (an
    earlier bf16 conversion was up to 0.156 off)."""
    from ember.model.registry import REGISTRY, sha256_file

    assert sha256_file(smollm2_folder / "model.gguf") == REGISTRY["smollm2"].sha256
    assert {"LICENSE", "NOTICE", "ember-source.json"} <= {p.name for p in smollm2_folder.iterdir()}
    model, tok = reference
    exported = transformers.AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    for prompt in PROMPTS:
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            assert torch.equal(exported(ids).logits, model(ids).logits), prompt


def test_pulled_folder_answers(smollm2_folder: Path) -> None:
    from ember.model.backends.ember import EmberBackend

    with EmberBackend.from_path(smollm2_folder, config=EngineConfig(kv_cache_bytes=64 << 20)) as backend:
        out = backend.chat([{"role": "user", "content": "What is the capital of France?"}],
                           SamplingParams(temperature=0, max_tokens=24))
    assert "Paris" in out.text
    assert out.finish_reason == "stop"
