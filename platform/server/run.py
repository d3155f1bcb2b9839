"""Build the server's state from `Settings` (`ember serve`, and tests that run a live server)."""

from __future__ import annotations

from ember.model.backends.base import Backend
from ember.platform.auth import check_bind, is_loopback
from ember.platform.server.state import ServerState
from ember.platform.settings import Settings
from ember.platform.wiring import EmbedderFactory, Wiring

__all__ = ["build_state", "check_bind", "is_loopback"]


def build_state(settings: Settings, backend: Backend | None = None, model_name: str | None = None,
                embedder_factory: EmbedderFactory | None = None) -> ServerState:
    """The state of a server over `settings`; `backend` / `embedder_factory` inject ready-made ones."""
    return ServerState(Wiring(settings, model=model_name, backend=backend, embedder_factory=embedder_factory))
