"""/health (never needs a key) and /metrics (Prometheus text)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from ember.platform.server.routes.openai import state_of

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    st = state_of(request)
    return {"status": "ok", "model": st.model_name, "uptime_s": round(time.time() - st.started, 1)}


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(state_of(request).metrics.render(), media_type="text/plain; version=0.0.4")
