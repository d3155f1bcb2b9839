"""The FastAPI app: routes per resource, OpenAI-style errors, API-key auth and request metrics.

Auth and metrics are plain ASGI middleware (not `BaseHTTPMiddleware`, which buffers streams and hides a
client's disconnect from the route). Before anything else a request's Host and Origin are checked
(guard.py: DNS rebinding and CSRF), and a JSON body is limited to `MAX_BODY` bytes. Once an API key has been
created, every route but /health and the UI's static shell needs `Authorization: Bearer KEY`; keys are checked
against the database on every request, so `ember keys revoke` takes effect at once, even on a running server.
An unexpected error becomes a JSON 500 here, so it never reaches uvicorn, which would close the keep-alive
connection.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ember.platform.auth import Gate, bearer_token
from ember.platform.server import errors
from ember.platform.server.guard import NOSNIFF, Guard
from ember.platform.server.routes import collections, openai, sessions, system, web
from ember.platform.server.state import ServerState
from ember.platform.server.users import SINGLE, Principal

OPEN = {"/health", *web.PUBLIC}
ROUTERS = (system.router, openai.router, collections.router, sessions.router, web.router)
log = logging.getLogger("ember.server")


MAX_BODY = 8 << 20  # a JSON request body; more is a 413 before it is read into memory


def bounded(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a body without Content-Length (chunked) at `limit` bytes with a 413."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:  # FastAPI re-raises an HTTPException met while reading the body
                raise HTTPException(413, f"the request body is larger than {limit >> 20} MiB")
        return message

    return wrapped


class AuthAndMetrics:
    def __init__(self, app: ASGIApp, st: ServerState) -> None:
        self.app, self.st = app, st
        s = st.settings.server
        self.guard = Guard(s.host, s.allowed_hosts, s.allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, started = time.perf_counter(), 500, False
        path = scope["path"]

        async def send_and_count(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), NOSNIFF]}
            await send(message)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            host = headers.get("host")
            if not self.guard.host_ok(host):
                await self.refuse(send_and_count, 421, f"this server does not answer to the host {host!r}: "
                                  "use 127.0.0.1 or localhost, or list the name in server.allowed_hosts",
                                  "misdirected_request")
                return
            if not self.guard.origin_ok(scope["method"], host, headers.get("origin"), headers.get("sec-fetch-site")):
                await self.refuse(send_and_count, 403, f"cross-origin request refused (Origin "
                                  f"{headers.get('origin')!r}): list the origin in server.allowed_origins to allow it",
                                  "cross_origin_refused")
                return
            if path not in OPEN:
                refusal = self.check(scope)
                if refusal is not None:
                    await self.refuse(send_and_count, 401, refusal, "invalid_api_key")
                    return
                scope.setdefault("state", {})["principal"] = await run_in_threadpool(self.principal, scope)
            if not headers.get("content-type", "").startswith("multipart/"):  # uploads have their own limits
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) > MAX_BODY:
                    await self.refuse(send_and_count, 413, f"the request body is larger than {MAX_BODY >> 20} MiB",
                                      "request_too_large")
                    return
                receive = bounded(receive, MAX_BODY)
            await self.app(scope, receive, send_and_count)
        except Exception as e:
            if started:  # a stream broke after its headers: the connection has to end
                raise
            log.exception("internal error", exc_info=e)
            await self.refuse(send_and_count, 500, f"internal server error ({type(e).__name__})", None)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("/static" if path.startswith("/static/") else "other")
            self.st.metrics.observe(label, scope["method"], status, time.perf_counter() - start)

    def check(self, scope: Scope) -> str | None:
        return Gate(self.st.keys).refusal(scope["headers"])  # the one bearer-key check (platform/auth.py)

    def principal(self, scope: Scope) -> Principal:
        """Who the (checked) request acts for: the user of its key once users exist, else the one admin."""
        if not self.st.users.team():
            return SINGLE
        token = bearer_token(scope["headers"])
        return self.st.users.principal(self.st.keys.user_of(token) if token else None)

    async def refuse(self, send: Send, status: int, message: str, code: str | None) -> None:
        raw = json.dumps(errors.body(status, message, code)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


def create_app(st: ServerState) -> FastAPI:
    app = FastAPI(title="Ember", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.ember = st
    errors.install(app)
    for r in ROUTERS:
        app.include_router(r)
    app.add_middleware(AuthAndMetrics, st=st)
    return app


def api_routes() -> list[tuple[str, str]]:
    """(method, path) of every route that needs a key when keys exist (for tests and docs)."""
    out: list[tuple[str, str]] = [("GET", "/openapi.json")]
    for r in (route for router in ROUTERS for route in router.routes):
        path: Any = getattr(r, "path", None)
        for m in sorted(getattr(r, "methods", None) or ()):
            if path and path not in OPEN and m != "HEAD" and not path.startswith("/openapi"):
                out.append((m, path))
    return out
