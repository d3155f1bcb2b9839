"""Chat sessions: list, create, read (with messages and citations), delete; each user sees only their own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ember.platform.server.routes.openai import principal_of, state_of
from ember.platform.server.schemas import SessionCreate

router = APIRouter(prefix="/v1/sessions")


@router.get("")
async def list_sessions(request: Request) -> dict[str, Any]:
    sessions = await run_in_threadpool(state_of(request).sessions.all, principal_of(request).name)
    return {"object": "list", "data": [s.to_dict() for s in sessions]}


@router.post("", status_code=201)
async def create_session(body: SessionCreate, request: Request) -> dict[str, Any]:
    st, who = state_of(request), principal_of(request)
    if body.collection:
        await run_in_threadpool(st.users.check_read, who, body.collection)
    s = await run_in_threadpool(st.sessions.create, body.title, body.collection, who.name)
    return s.to_dict()


@router.get("/{session_id}")
async def get_session(session_id: str, request: Request) -> dict[str, Any]:
    return (await run_in_threadpool(state_of(request).sessions.get, session_id, principal_of(request).name)).to_dict()


@router.delete("/{session_id}")
async def delete_session(session_id: str, request: Request) -> dict[str, Any]:
    await run_in_threadpool(state_of(request).sessions.delete, session_id, principal_of(request).name)
    return {"id": session_id, "object": "chat.session", "deleted": True}
