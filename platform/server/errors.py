"""Errors as OpenAI-style bodies: `{"error": {"message", "type", "param", "code"}}` with the right status.

`EmberError`s carry their own `http_status` (and a hint, appended to the message); request validation errors
are 400s that name the field; anything else is a 500 that does not leak a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ember.model.errors import EmberError

log = logging.getLogger("ember.server")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error", 415: "invalid_request_error",
         421: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error", 502: "server_error",
         503: "server_error"}


class ApiError(EmberError):
    """An HTTP-level refusal (413, 415, 429, ...) with an OpenAI error `code`."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.http_status, self.code, self.param, self.headers = status, code, param, headers or {}


def body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error" if status >= 500 else
                                                              "invalid_request_error"),
                      "param": param, "code": code}}


def error_payload(e: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    if isinstance(e, ApiError):
        return e.http_status, body(e.http_status, str(e), e.code, e.param), e.headers
    if isinstance(e, EmberError):
        status = int(getattr(e, "http_status", 400))
        return status, body(status, str(e), type(e).__name__), {}
    log.exception("internal error", exc_info=e)
    return 500, body(500, f"internal server error ({type(e).__name__})"), {}


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "constrained-str", "constrained-int"}


def _union_tag(part: Any) -> bool:
    """pydantic names the member of a union that failed inside `loc` ('str', 'list[ContentPart]', ...)."""
    return isinstance(part, str) and (part in _TYPE_TAGS or any(c in part for c in "[](),-"))


def _most_specific(errs: list[Any]) -> Any:
    """Of a union's errors, the one that says what is wrong with the value rather than "not a str": a bound or
    value error before a type mismatch, the deepest location first."""
    return max(errs, key=lambda err: (not str(err.get("type", "")).endswith("_type"), len(err.get("loc", ()))))


def install(app: FastAPI) -> None:
    async def ember_error(request: Request, e: Exception) -> JSONResponse:
        status, payload, headers = error_payload(e)
        return JSONResponse(payload, status_code=status, headers=headers)

    async def validation_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        first = _most_specific(list(e.errors())) if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path") and not _union_tag(p)]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(body(400, message, "invalid_request", param), status_code=400)

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)
        return JSONResponse(body(e.status_code, str(e.detail)), status_code=e.status_code,
                            headers=dict(e.headers or {}))

    app.add_exception_handler(EmberError, ember_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    # no handler for plain `Exception`: Starlette runs that one in its outermost middleware and then re-raises,
    # and uvicorn closes the keep-alive connection. app.AuthAndMetrics answers those 500s itself.
