"""The exact float32 HF export of each pulled Qwen GGUF (`hf_folder`: what `ember models export` writes and the vLLM
backend uses) loads in transformers as Qwen2ForCausalLM with logits identical to transformers' reading of the GGUF.

Its own module so that test_qwen.py's models are freed first (the 1.5B export holds 6 GB of fp32 weights).
Part of `make test-models`; skipped when the Qwen files are not pulled.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ember.model.registry import GGUF_NAME, hf_folder, is_pulled

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.qwen

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".ember" / "models"
PROMPT = "def fibonacci(n):\n    "
STRINGS = ["Hello, world!", "unicode: héllo wörld — 你好 🤖", "numbers 3.14159 1,000,000",
           "<|im_start|>user\nhi<|im_end|>\n"]


@pytest.fixture(scope="module", params=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def gguf(request: pytest.FixtureRequest) -> Path:
    if not is_pulled(MODELS_DIR, request.param):
        pytest.skip(f"{request.param} is not pulled: run `make test-models`")
    return MODELS_DIR / request.param / GGUF_NAME


@pytest.fixture(scope="module")
def reference(gguf: Path) -> Iterator[tuple[Any, Any]]:
    kw = dict(gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw).eval()
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, **kw)
    yield model, tok
    del model
    gc.collect()


def test_float32_export_matches_the_gguf(reference: tuple[Any, Any], gguf: Path) -> None:
    model, tok = reference
    folder = hf_folder(gguf.parent)
    assert (folder / "LICENSE").is_file() and (folder / "NOTICE").is_file()
    exported = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(exported).__name__ == "Qwen2ForCausalLM"
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, model(ids).logits)
    etok = transformers.AutoTokenizer.from_pretrained(folder)
    for s in STRINGS:
        assert etok(s)["input_ids"] == tok(s)["input_ids"], s
    del exported
    gc.collect()
