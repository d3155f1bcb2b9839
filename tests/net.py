"""The one free-port helper of the test suite."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
