"""What the vLLM tests share: the `.venv-vllm` interpreter (`make setup-vllm` builds it) and its environment.

vLLM's pins fight the main environment's, so it lives in a virtualenv of its own and tests drive it in a
subprocess. Without `.venv-vllm` those tests skip; `make test` builds it first, so in CI they run.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.net import free_port as free_port_now

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    path = REPO / ".venv-vllm" / "bin" / "python"
    if not path.exists():
        pytest.skip(f"{path} does not exist: `make setup-vllm` builds it (make test does)")
    return path


@pytest.fixture(scope="session")
def vllm_env() -> dict[str, str]:
    """A small KV cache (1 GiB) so a test engine fits beside everything else on the machine."""
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    return free_port_now()


@pytest.fixture(scope="module")
def module_port() -> int:
    return free_port_now()


Greedy = Callable[..., tuple[list[int], torch.Tensor]]


@pytest.fixture(scope="session")
def hf_greedy(smollm2_hf: Path) -> Greedy:
    """transformers' fp32 greedy continuation of prompt ids on the SmolLM2 folder: (new ids, log-softmax per step).

    The reference the vLLM-driven tests compare against; `stop_at_eos=False` generates exactly `n` tokens."""
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    eos = model.config.eos_token_id

    @functools.cache
    def greedy(ids: tuple[int, ...], n: int, stop_at_eos: bool = False) -> tuple[list[int], torch.Tensor]:
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, eos_token_id=eos if stop_at_eos else None,
                             pad_token_id=eos)
        return out.sequences[0, len(ids):].tolist(), torch.log_softmax(torch.cat(out.logits).float(), dim=-1)

    return lambda ids, n, stop_at_eos=False: greedy(tuple(ids), n, stop_at_eos)
