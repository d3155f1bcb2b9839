"""Users, roles and per-collection access: who may read, write or delete which collection.

Roles: `admin` (everything, every collection), `editor` (creates collections, which it then owns; writes those
and the ones granted `write`; reads those granted `read`), `viewer` (reads the collections granted to it; never
uploads, creates or deletes). Chat sessions are private to the user who made them, whatever the role.

Until the first user exists Ember is single-user, exactly as before users existed: every valid key (or, without
keys, every loopback caller) is the one admin, `SINGLE`. Keys made before users (`ember keys create` without
`--user`) stay admin keys; revoke them once the team's users have their own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ember.model.errors import EmberError
from ember.platform.auth import bearer_token
from ember.platform.server.db import Database
from ember.platform.server.keys import KeyStore
from ember.retrieval import sql

Role = Literal["admin", "editor", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "editor", "viewer")
Access = Literal["owner", "write", "read"]
GRANTS: tuple[Access, ...] = ("write", "read")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class AccessDeniedError(EmberError):
    http_status = 403


class UserExistsError(EmberError):
    http_status = 409


class UserNotFoundError(EmberError):
    http_status = 404


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for. `name` None: single-user mode, or a key made before users existed."""

    name: str | None
    role: Role

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def to_dict(self) -> dict[str, object]:
        return {"object": "user", "name": self.name, "role": self.role,
                "can_create_collections": self.role != "viewer"}


SINGLE = Principal(None, "admin")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    created_at: float


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise EmberError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    return role


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # users --------------------------------------------------------------------------------------------
    def create(self, name: str, role: str) -> User:
        if not NAME.match(name):
            raise EmberError(f"invalid user name {name!r}: use letters, digits, '.', '_', '@' or '-' (at most 64)")
        user = User(name, check_role(role), time.time())
        try:
            with self.db.write() as con:
                con.execute("INSERT INTO users (name, role, created_at) VALUES (?, ?, ?)",
                            (user.name, user.role, user.created_at))
        except sql.IntegrityError:
            raise UserExistsError(f"a user named {name!r} already exists") from None
        return user

    def all(self) -> list[User]:
        return [User(r[0], r[1], float(r[2])) for r in
                self.db.read("SELECT name, role, created_at FROM users ORDER BY name")]

    def get(self, name: str) -> User:
        rows = self.db.read("SELECT name, role, created_at FROM users WHERE name = ?", (name,))
        if not rows:
            raise UserNotFoundError(f"no user named {name!r}", hint="See `ember users list`.")
        return User(rows[0][0], rows[0][1], float(rows[0][2]))

    def set_role(self, name: str, role: str) -> None:
        with self.db.write() as con:
            cur = con.execute("UPDATE users SET role = ? WHERE name = ?", (check_role(role), name))
        if cur.rowcount == 0:
            raise UserNotFoundError(f"no user named {name!r}", hint="See `ember users list`.")

    def delete(self, name: str) -> None:
        """The user, their keys, grants and chat sessions, in one transaction."""
        with self.db.write() as con:
            con.execute("DELETE FROM api_keys WHERE user_name = ?", (name,))
            con.execute("DELETE FROM collection_access WHERE user_name = ?", (name,))
            con.execute("DELETE FROM chat_sessions WHERE user_name = ?", (name,))
            cur = con.execute("DELETE FROM users WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise UserNotFoundError(f"no user named {name!r}", hint="See `ember users list`.")

    def team(self) -> bool:
        """Users exist: access control is on."""
        return bool(self.db.read("SELECT 1 FROM users LIMIT 1"))

    def principal(self, user: str | None) -> Principal:
        """The principal of a key owned by `user` (None: single-user mode or a pre-users key: admin)."""
        if user is None:
            return SINGLE
        u = self.get(user)
        return Principal(u.name, u.role)

    # collection access --------------------------------------------------------------------------------
    def set_owner(self, collection: str, principal: Principal) -> None:
        if principal.name is None:
            return
        with self.db.write() as con:
            con.execute("DELETE FROM collection_access WHERE collection = ? AND user_name = ?",
                        (collection, principal.name))
            con.execute("INSERT INTO collection_access (collection, user_name, access) VALUES (?, ?, 'owner')",
                        (collection, principal.name))

    def grant(self, collection: str, user: str, access: str) -> None:
        if access not in GRANTS:
            raise EmberError(f"invalid access {access!r}: use read or write")
        self.get(user)
        with self.db.write() as con:
            con.execute("DELETE FROM collection_access WHERE collection = ? AND user_name = ? AND access <> 'owner'",
                        (collection, user))
            if not con.execute("SELECT 1 FROM collection_access WHERE collection = ? AND user_name = ?",
                               (collection, user)).fetchall():
                con.execute("INSERT INTO collection_access (collection, user_name, access) VALUES (?, ?, ?)",
                            (collection, user, access))

    def revoke(self, collection: str, user: str) -> None:
        with self.db.write() as con:
            cur = con.execute("DELETE FROM collection_access WHERE collection = ? AND user_name = ? "
                              "AND access <> 'owner'", (collection, user))
        if cur.rowcount == 0:
            raise UserNotFoundError(f"user {user!r} has no grant on collection {collection!r}")

    def grants(self, collection: str) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.read(
            "SELECT user_name, access FROM collection_access WHERE collection = ? ORDER BY user_name", (collection,))}

    def forget_collection(self, collection: str) -> None:
        with self.db.write() as con:
            con.execute("DELETE FROM collection_access WHERE collection = ?", (collection,))

    def access(self, principal: Principal, collection: str) -> Access | None:
        if principal.admin:
            return "owner"
        rows = self.db.read("SELECT access FROM collection_access WHERE collection = ? AND user_name = ?",
                            (collection, principal.name))
        return rows[0][0] if rows else None

    def readable(self, principal: Principal, names: Iterable[str]) -> list[str]:
        """Of `names`, the collections `principal` may see (in the given order)."""
        names = list(names)
        if principal.admin:
            return names
        mine = {r[0] for r in self.db.read("SELECT collection FROM collection_access WHERE user_name = ?",
                                           (principal.name,))}
        return [n for n in names if n in mine]

    # checks (raise AccessDeniedError, or a not-found for what the principal may not even see) -----------
    def check_read(self, principal: Principal, collection: str) -> None:
        from ember.retrieval.errors import CollectionNotFoundError

        if self.access(principal, collection) is None:  # not even its existence is told
            raise CollectionNotFoundError(f"no collection named {collection!r}")

    def check_write(self, principal: Principal, collection: str) -> None:
        self.check_read(principal, collection)
        if principal.role == "viewer":
            raise AccessDeniedError(f"user {principal.name!r} is a viewer: viewers cannot change collections")
        if self.access(principal, collection) not in ("owner", "write"):
            raise AccessDeniedError(f"user {principal.name!r} may read collection {collection!r} but not change it",
                                    hint="Its owner or an admin can grant write access (`ember users grant`).")

    def check_delete(self, principal: Principal, collection: str) -> None:
        self.check_write(principal, collection)
        if self.access(principal, collection) != "owner":
            raise AccessDeniedError(f"only the owner of collection {collection!r} or an admin may delete it")

    def check_share(self, principal: Principal, collection: str) -> None:
        """Only a collection's owner (or an admin) decides who else may use it."""
        self.check_read(principal, collection)
        if self.access(principal, collection) != "owner":
            raise AccessDeniedError(f"only the owner of collection {collection!r} or an admin may change its grants")

    def check_create(self, principal: Principal) -> None:
        if principal.role == "viewer":
            raise AccessDeniedError(f"user {principal.name!r} is a viewer: viewers cannot create collections")


class McpPolicy:
    """`ember mcp serve`'s access policy (agents/mcp_server.py `Policy`): the caller is the user of the bearer
    key its request carried (the HTTP gate has checked it); over stdio, the local user, an admin."""

    def __init__(self, users: UserStore, keys: KeyStore) -> None:
        self.users, self.keys = users, keys

    def team(self) -> bool:
        return self.users.team()

    def principal(self, headers: Mapping[str, str] | None) -> Principal:
        if headers is None or not self.users.team():
            return SINGLE
        token = bearer_token((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        return self.users.principal(self.keys.user_of(token) if token else None)

    def readable(self, headers: Mapping[str, str] | None, names: list[str]) -> list[str]:
        return self.users.readable(self.principal(headers), names)
