"""Who may call Ember over HTTP: one bearer-key check and one loopback rule for the API server and the MCP
server alike.

A `Gate` accepts the keys of a `KeyChecker` (the server's hashed keys, `ember keys create`) and any listed
in config (plain or `sha256:<hex>`); it is asked on every request, so a key created or revoked meanwhile
counts at once. Without any key a server only binds a loopback address (`check_bind`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ember.model.errors import ConfigError, EmberError

MISSING = "missing API key: send the header 'Authorization: Bearer KEY' (create one with `ember keys create`)"


def is_loopback(host: str) -> bool:
    """`localhost`, `*.localhost`, 127.0.0.0/8 or ::1."""
    host = host.strip().lower().strip("[]").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
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


def check_key(token: str, keys: Sequence[str]) -> bool:
    """Whether `token` is one of `keys` (plain, or `sha256:<hex>` of the key), compared in constant time."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    ok = False
    for key in keys:
        expected, got = (key[7:].lower(), digest) if key.startswith("sha256:") else (key, token)
        ok |= hmac.compare_digest(expected.encode(), got.encode())
    return ok


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header among ASGI `headers`, else None."""
    header = dict(headers).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class KeyChecker(Protocol):
    """A key store (the server's hashed keys): whether any key exists, and the name of a valid `key`
    (an `EmberError` saying why otherwise)."""

    def configured(self) -> bool: ...

    def check(self, key: str) -> str: ...


class Gate:
    def __init__(self, store: KeyChecker | None = None, keys: Sequence[str] = ()) -> None:
        self.store, self.keys = store, list(keys)

    def required(self) -> bool:
        return bool(self.keys) or (self.store is not None and self.store.configured())

    def refusal(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """None when the request may go on, else why it is refused (the text of the 401)."""
        if not self.required():
            return None
        token = bearer_token(headers)
        if token is None:
            return MISSING
        if check_key(token, self.keys):
            return None
        if self.store is None or not self.store.configured():
            return "invalid API key"
        try:
            self.store.check(token)
        except EmberError as e:
            return e.message
        return None


class BearerAuth:
    """ASGI middleware: HTTP requests the `gate` refuses get a 401 whose JSON body `body(message)` makes
    (each protocol words its errors its own way)."""

    def __init__(self, app: Any, gate: Gate, body: Callable[[str], dict[str, Any]]) -> None:
        self.app, self.gate, self.body = app, gate, body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self.gate.refusal(scope.get("headers") or [])
            if refusal is not None:
                await refuse(send, 401, self.body(refusal))
                return
        await self.app(scope, receive, send)


async def refuse(send: Any, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
