"""What every command needs: settings, its `Wiring`, resolving a model name, and loading with a spinner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from ember.platform.backends import device_for, resolve_model
from ember.platform.settings import Settings, load_settings

if TYPE_CHECKING:
    from ember.model.backends.base import Backend
    from ember.platform.wiring import Wiring
    from ember.retrieval.embedders import Embedder

__all__ = ["console", "device_for", "resolve_model", "settings_from", "shown_path", "start_backend", "wiring_from"]
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


def shown_path(source: str) -> str:
    """A source path relative to the current folder when it is under it."""
    try:
        return Path(source).relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return source
