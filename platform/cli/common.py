"""What every command needs: settings, its `Wiring`, resolving a model name, and loading with a spinner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from ember.model.errors import ModelNotFoundError
from ember.platform.settings import Settings, load_settings

if TYPE_CHECKING:
    from ember.model.backends.base import Backend
    from ember.platform.wiring import Wiring
    from ember.retrieval.embedders import Embedder

console = Console(highlight=False)


def wiring_from(ctx: typer.Context, *, model: str | None = None, backend: str | None = None) -> Wiring:
    """The command's `Wiring` (platform/wiring.py): `backend` overrides settings.backend; embedders load
    under a spinner. The command closes it (`with wiring_from(ctx) as w:`)."""
    from ember.platform.wiring import Wiring, load_embedder

    s = settings_from(ctx)
    if backend:
        s = s.model_copy(update={"backend": backend})

    def embedder(spec: str) -> Embedder:
        with console.status("Loading the embedding model…", spinner="dots"):
            return load_embedder(s, spec)

    return Wiring(s, model=model, embedder_factory=embedder)


def start_backend(wiring: Wiring) -> Backend:
    """The wiring's backend, started under a spinner."""
    with console.status(f"Starting the {wiring.settings.backend} backend…", spinner="dots"):
        return wiring.backend()


def settings_from(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    if obj is None:
        obj = load_settings()
        ctx.find_root().obj = obj
    assert isinstance(obj, Settings)
    return obj


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


def shown_path(source: str) -> str:
    """A source path relative to the current folder when it is under it."""
    try:
        return Path(source).relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return source


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
