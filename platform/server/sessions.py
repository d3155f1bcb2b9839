"""Chat sessions kept in SQLite, so a conversation survives a server restart."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ember.model.errors import EmberError
from ember.platform.server.db import Database


class SessionNotFoundError(EmberError):
    http_status = 404


@dataclass(slots=True)
class Session:
    id: str
    title: str
    collection: str | None
    created_at: float
    updated_at: float
    user: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.session", "title": self.title, "collection": self.collection,
                "created_at": self.created_at, "updated_at": self.updated_at, "messages": self.messages}


OWNER = "user_name IS ?"  # NULL-safe: a pre-users session belongs to the single-user mode's admin


def _owner(db: Database) -> str:
    return "user_name IS NOT DISTINCT FROM ?" if db.dialect == "postgresql" else OWNER


class SessionStore:
    """Sessions are private: every read and write names the user (None in single-user mode), and a session
    of anyone else is "not found", never "forbidden"."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.owner = _owner(db)

    def create(self, title: str = "New chat", collection: str | None = None, user: str | None = None) -> Session:
        now = time.time()
        s = Session("chat-" + uuid.uuid4().hex[:16], title.strip()[:200] or "New chat", collection, now, now, user)
        with self.db.write() as con:
            con.execute("INSERT INTO chat_sessions (id, title, collection, created_at, updated_at, user_name) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (s.id, s.title, s.collection, now, now, user))
        return s

    def all(self, user: str | None = None) -> list[Session]:
        rows = self.db.read("SELECT id, title, collection, created_at, updated_at, user_name FROM chat_sessions "
                            f"WHERE {self.owner} ORDER BY updated_at DESC", (user,))
        return [Session(*r) for r in rows]

    def get(self, session_id: str, user: str | None = None) -> Session:
        rows = self.db.read("SELECT id, title, collection, created_at, updated_at, user_name FROM chat_sessions "
                            f"WHERE id = ? AND {self.owner}", (session_id, user))
        if not rows:
            raise SessionNotFoundError(f"no chat session {session_id!r}")
        s = Session(*rows[0])
        for role, content, citations in self.db.read(
                "SELECT role, content, citations FROM chat_messages WHERE session_id = ? ORDER BY id", (session_id,)):
            m: dict[str, Any] = {"role": role, "content": content}
            if citations:
                m["citations"] = json.loads(citations)
            s.messages.append(m)
        return s

    def history(self, session_id: str, user: str | None = None) -> list[dict[str, Any]]:
        return [{"role": m["role"], "content": m["content"]} for m in self.get(session_id, user).messages]

    def append(self, session_id: str, question: str, answer: str, citations: list[dict] | None = None,
               user: str | None = None) -> None:
        """The user's question and the answer, in one transaction (a turn is saved whole or not at all)."""
        now = time.time()
        with self.db.write() as con:
            if not con.execute(f"SELECT 1 FROM chat_sessions WHERE id = ? AND {self.owner}",
                               (session_id, user)).fetchall():
                raise SessionNotFoundError(f"no chat session {session_id!r}")
            n = con.execute("SELECT count(*) FROM chat_messages WHERE session_id = ?", (session_id,)).fetchone()[0]
            con.execute("INSERT INTO chat_messages (session_id, role, content, citations, created_at) "
                        "VALUES (?, 'user', ?, NULL, ?)", (session_id, question, now))
            con.execute("INSERT INTO chat_messages (session_id, role, content, citations, created_at) "
                        "VALUES (?, 'assistant', ?, ?, ?)",
                        (session_id, answer, json.dumps(citations) if citations is not None else None, now))
            if n == 0:  # the first question names the chat
                con.execute("UPDATE chat_sessions SET title = ? WHERE id = ? AND title = 'New chat'",
                            (" ".join(question.split())[:80], session_id))
            con.execute("UPDATE chat_sessions SET updated_at = ? WHERE id = ?", (now, session_id))

    def delete(self, session_id: str, user: str | None = None) -> None:
        with self.db.write() as con:
            cur = con.execute(f"DELETE FROM chat_sessions WHERE id = ? AND {self.owner}", (session_id, user))
        if cur.rowcount == 0:
            raise SessionNotFoundError(f"no chat session {session_id!r}")
