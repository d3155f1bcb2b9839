"""Build the server from `Settings` and run it with uvicorn (`ember serve`)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from ember.model.backends.base import Backend
from ember.model.errors import ConfigError
from ember.platform.server.state import ServerState
from ember.platform.settings import Settings
from ember.retrieval.embedders import Embedder


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, has_keys: bool) -> None:
    """Without API keys Ember only listens on the loopback address."""
    if not has_keys and not is_loopback(host):
        raise ConfigError(f"refusing to listen on {host} without API keys: anyone who can reach it could use it",
                          hint="Create a key first (`ember keys create NAME`), or serve on 127.0.0.1.")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_state(settings: Settings, backend: Backend, model_name: str,
                embedder_factory: Callable[[str], Embedder] | None = None) -> ServerState:
    if embedder_factory is None:
        from ember.retrieval.embedders import load_embedder

        r = settings.retrieval

        def embedder_factory(spec: str) -> Embedder:
            e = load_embedder(spec, batch_size=r.embed_batch_size, api_key=r.embedder_api_key)
            e.info  # noqa: B018 (load now)
            return e

    return ServerState(settings, backend, model_name, embedder_factory)
