"""Settings -> a model: which files (`resolve_model`), which device (`device_for`), which `Backend`
(`make_backend`, called by platform/wiring.py, the one place a backend is built)."""

from __future__ import annotations

import os
from pathlib import Path

from ember.model.backends.base import Backend
from ember.model.errors import ModelNotFoundError
from ember.platform.settings import Settings


def engine_config(settings: Settings):  # -> EngineConfig
    from ember.model.engine.llm_engine import EngineConfig

    e = settings.engine
    return EngineConfig(kv_cache_bytes=e.kv_cache_mb << 20, block_size=e.block_size, max_num_seqs=e.max_num_seqs,
                        max_num_batched_tokens=e.max_num_batched_tokens, max_model_len=e.max_model_len,
                        enable_prefix_caching=e.prefix_caching, truncate_prompt=e.truncate_prompt,
                        kv_cache_dtype=e.kv_cache_dtype)


def make_backend(settings: Settings, model: str | None = None) -> Backend:
    """`settings.backend` for `model` (default `settings.model`)."""
    name = model or settings.model
    if settings.backend == "openai":
        from ember.model.backends.openai import OpenAIBackend

        o = settings.openai
        return OpenAIBackend(o.base_url, o.model or name, api_key=o.api_key, timeout=o.timeout_s)
    path = resolve_model(settings, name)
    if settings.backend == "vllm":
        from ember.model.backends.vllm import VLLMBackend

        dtype = "float32" if settings.dtype == "auto" and device_for(settings) == "cpu" else settings.dtype
        return VLLMBackend(str(path), dtype="auto" if dtype == "auto" else dtype)
    from ember.model.adapter import resolve_adapter
    from ember.model.backends.ember import EmberBackend

    return EmberBackend.from_path(path, dtype=settings.dtype, device=device_for(settings),
                                  config=engine_config(settings), quantization=settings.engine.quantization,
                                  adapter=resolve_adapter(settings.engine.adapter, name))


def resolve_model(settings: Settings, name: str | None) -> Path:
    """A registry name, a folder under the data dir's models/, or a path to an HF folder or .gguf file."""
    from ember.model.registry import REGISTRY, is_pulled

    name = name or settings.model
    local = settings.models_dir / name
    if local.is_dir() and (is_pulled(settings.models_dir, name) if name in REGISTRY or (local / "model.gguf").exists()
                           else (local / "config.json").is_file()):
        return local
    if name in REGISTRY:
        reason = "is not complete" if local.exists() and not is_pulled(settings.models_dir, name) else "is not pulled"
        raise ModelNotFoundError(f"model {name!r} {reason}", hint=f"Run `ember models pull {name}` first.")
    path = Path(name).expanduser()
    if path.exists():
        return path
    raise ModelNotFoundError(f"no model named {name!r} (not in the registry, not in {settings.models_dir}, "
                             f"not a path)", hint="See `ember models list`.")


def device_for(settings: Settings) -> str:
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    else:
        torch.set_num_threads(os.cpu_count() or 1)
    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if settings.device == "cuda" and not torch.cuda.is_available():
        from ember.model.errors import ConfigError

        raise ConfigError("device='cuda' but no CUDA device is available",
                          hint="Set EMBER_DEVICE=cpu (or device = \"cpu\" in ember.toml).")
    return settings.device
