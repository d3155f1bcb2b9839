"""/health (never needs a key), /metrics (Prometheus text: its labels are route templates, never a collection
or session name, so any signed-in user may read it) and /v1/me (who is signed in, and what they may do)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ember.platform.server.routes.openai import principal_of, state_of

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    st = state_of(request)
    return {"status": "ok", "model": st.model_name, "uptime_s": round(time.time() - st.started, 1)}


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(state_of(request).metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/me")
async def me(request: Request) -> dict[str, Any]:
    """The signed-in user (name None: single-user mode), their role and what the UI should offer them."""
    st, who = state_of(request), principal_of(request)
    team = await run_in_threadpool(st.users.team)
    return {**who.to_dict(), "team": team}
