"""API keys: random secrets shown once, stored as sha256 hashes, revocable.

A key is `ember-` plus 32 random URL-safe bytes (256 bits), so a plain sha256 is enough to store it: there
is nothing to brute-force that a slow password hash would protect. Until the first key is created the
server is open, and then it only listens on the loopback address.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from ember.model.errors import EmberError
from ember.platform.server.db import Database
from ember.retrieval import sql

PREFIX = "ember-"


class AuthError(EmberError):
    http_status = 401


class KeyExistsError(EmberError):
    http_status = 409


class KeyNotFoundError(EmberError):
    http_status = 404


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None
    user: str | None = None  # None: a key made before users existed (an admin key)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, user: str | None = None) -> str:
        """A new key named `name` (belonging to `user`); returns the secret (the only time it exists outside
        the client)."""
        if not name.strip() or len(name) > 64:
            raise EmberError(f"invalid key name {name!r}: use 1 to 64 characters")
        key = PREFIX + secrets.token_urlsafe(32)
        try:
            with self.db.write() as con:
                con.execute("INSERT INTO api_keys (name, prefix, hash, created_at, user_name) VALUES (?, ?, ?, ?, ?)",
                            (name, key[:len(PREFIX) + 4], digest(key), time.time(), user))
        except sql.IntegrityError:
            if user is not None and not self.db.read("SELECT 1 FROM users WHERE name = ?", (user,)):
                raise KeyNotFoundError(f"no user named {user!r}", hint="Create it with `ember users create`.") from None
            raise KeyExistsError(f"a key named {name!r} already exists",
                                 hint="Pick another name, or revoke it first with `ember keys revoke`.") from None
        return key

    def all(self) -> list[ApiKey]:
        rows = self.db.read("SELECT name, prefix, created_at, revoked_at, last_used_at, user_name FROM api_keys "
                            "ORDER BY created_at")
        return [ApiKey(*r) for r in rows]

    def revoke(self, name: str) -> None:
        with self.db.write() as con:
            cur = con.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                              (time.time(), name))
        if cur.rowcount == 0:
            raise KeyNotFoundError(f"no active key named {name!r}", hint="See `ember keys list`.")

    def configured(self) -> bool:
        """Keys were ever created. Then every request needs an active one: revoking the last key locks the
        API (until a new key is made) rather than opening it to anyone."""
        return bool(self.db.read("SELECT 1 FROM api_keys LIMIT 1"))

    def check(self, key: str) -> str:
        """The name of the active key `key`, or `AuthError`."""
        return self.identify(key)[0]

    def user_of(self, key: str) -> str | None:
        """The user an (already checked) key belongs to; None for a pre-users key."""
        rows = self.db.read("SELECT user_name FROM api_keys WHERE hash = ?", (digest(key),))
        return rows[0][0] if rows else None

    def identify(self, key: str) -> tuple[str, str | None]:
        """(key name, user) of the active key `key`, or `AuthError`."""
        rows = self.db.read("SELECT name, revoked_at, user_name FROM api_keys WHERE hash = ?", (digest(key),))
        if not rows:
            raise AuthError("invalid API key")
        name, revoked, user = rows[0]
        if revoked is not None:
            raise AuthError("this API key was revoked")  # not named: the name is the owner's, not the caller's
        with self.db.write() as con:
            con.execute("UPDATE api_keys SET last_used_at = ? WHERE name = ?", (time.time(), name))
        return str(name), user
