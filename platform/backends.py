"""Build the configured `Backend` from `Settings`: the one place that maps config to a backend."""

from __future__ import annotations

from ember.model.backends.base import Backend
from ember.platform.cli.common import device_for, resolve_model
from ember.platform.settings import Settings


def engine_config(settings: Settings):  # -> EngineConfig
    from ember.model.engine.llm_engine import EngineConfig

    e = settings.engine
    return EngineConfig(kv_cache_bytes=e.kv_cache_mb << 20, block_size=e.block_size, max_num_seqs=e.max_num_seqs,
                        max_num_batched_tokens=e.max_num_batched_tokens, max_model_len=e.max_model_len,
                        enable_prefix_caching=e.prefix_caching, truncate_prompt=e.truncate_prompt)


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
    from ember.model.backends.ember import EmberBackend

    return EmberBackend.from_path(path, dtype=settings.dtype, device=device_for(settings),
                                  config=engine_config(settings), quantization=settings.engine.quantization)
