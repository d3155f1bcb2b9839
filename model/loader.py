"""Load a model and its tokenizer from an HF folder or a GGUF file; export to an HF folder."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ember.model.config import LlamaConfig
from ember.model.errors import ConfigError, WeightsError
from ember.model.llama import Llama
from ember.model.rope import inverse_frequencies
from ember.model.tokenizer import Tokenizer
from ember.model.weights.safetensors import SINGLE, load_safetensors, save_safetensors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: Llama
    tokenizer: Tokenizer
    source: Path
    load_seconds: float
    gguf: Any = None  # the parsed `GGUFFile` when loaded from one (quantization reads its blocks again)


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported; allowed: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def build_model(config: LlamaConfig, state: dict[str, torch.Tensor], source: str | Path,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Llama:
    """A `Llama` holding `state` (HF names). Missing, unexpected or mis-shaped tensors raise `WeightsError`."""
    with torch.device("meta"):
        model = Llama(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight")
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise WeightsError(source, f"missing tensor(s): {', '.join(missing[:5])}"
                                   + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if unexpected:
        raise WeightsError(source, f"unexpected tensor(s) for this config: {', '.join(unexpected[:5])}")
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise WeightsError(source, f"tensor {k!r} has shape {tuple(state[k].shape)}, the config implies {shape}")
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=not config.tie_word_embeddings, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.inv_freq = inverse_frequencies(config).to(device)
    return model.eval()


def load(path: str | Path, dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> LoadedModel:
    """From an HF folder (config.json, *.safetensors, tokenizer.json), a `.gguf` file, or a pulled model folder
    (its `model.gguf`, as shipped)."""
    from ember.model.registry import model_file

    src = model_file(Path(path))
    t0 = time.perf_counter()
    torch_dtype = resolve_dtype(dtype, device)
    gguf = None
    if src.is_file() and src.suffix == ".gguf":
        from ember.model.weights.gguf import GGUFFile, load_gguf

        gguf = GGUFFile(src)
        config, state, tokenizer = load_gguf(gguf)
    elif src.is_dir():
        config = LlamaConfig.load(src)
        state = load_safetensors(src)
        tokenizer = Tokenizer.load(src)
    elif not src.exists():
        raise WeightsError(src, "no such file or folder")
    else:
        raise WeightsError(src, "not a model: expected an HF folder or a .gguf file")
    model = build_model(config, state, src, torch_dtype, device)
    return LoadedModel(model, tokenizer, src, time.perf_counter() - t0, gguf)


def load_for_inference(path: str | Path, dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu",
                       quantization: str = "none", adapter: Path | None = None) -> LoadedModel:
    """`load`, merge a LoRA `adapter` folder, then fuse projections and quantize as serving runs them (see
    `ember.model.quantize`).

    From a GGUF file, `int4` and `auto` take its 4-bit tensors' codes as stored (but for the weights an
    adapter changed, which are requantized from the merged floats); `auto` follows its types.
    """
    from ember.model.fuse import fuse_projections
    from ember.model.quantize import MODES, quantize

    if quantization not in MODES:
        raise ConfigError(f"quantization={quantization!r} is not supported; allowed: {', '.join(MODES)}")
    t0 = time.perf_counter()
    lm = load(path, dtype=dtype, device=device)
    changed: set[str] = set()
    if adapter is not None:
        from ember.model.adapter import merge_adapter

        with torch.no_grad():
            changed = set(merge_adapter(lm.model, adapter))
    fuse_projections(lm.model)
    if quantization == "auto" and torch.device(device).type != "cpu":
        quantization = "none"  # the packed kernels are the CPU's; CUDA runs bf16
    if quantization != "none":
        if torch.device(device).type != "cpu":
            raise ConfigError(f"quantization={quantization!r} runs on the CPU only",
                              hint="On CUDA use quantization = \"none\" with dtype bfloat16.")
        sources, types = {}, {}
        if lm.gguf is not None and quantization in ("int4", "auto"):
            from ember.model.weights.gguf import int4_weights, weight_types

            types = weight_types(lm.gguf)
            sources = {k: v for k, v in int4_weights(lm.gguf, lm.model.config).items() if k not in changed}
        quantize(lm.model, quantization, sources, types)
    lm.load_seconds = time.perf_counter() - t0
    return lm


def export_hf(model: Llama, tokenizer: Tokenizer, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write an HF Llama folder that `transformers` and vLLM load as-is. Atomic: built beside, then renamed."""
    folder = Path(folder)
    dtype = dtype or model.dtype
    dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = model.config
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_safetensors(state, tmp / SINGLE)
    config.save(tmp, dtype=dtype_name)
    tokenizer.save(tmp)
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
                  "pad_token_id": config.pad_token_id}
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
    else:
        os.replace(tmp, folder)
    return folder
