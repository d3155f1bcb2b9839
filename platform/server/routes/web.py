"""The web chat UI: three static files shipped in `ember.platform.web`, served as they are."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from ember.platform.server.errors import ApiError
from ember.platform.server.guard import PAGE_HEADERS

router = APIRouter()
ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
PUBLIC = ("/", "/static/app.js", "/static/style.css")  # the UI shell holds no data: it loads without a key


def _asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, f"no such file {name!r}")
    data = files("ember.platform.web").joinpath(name).read_bytes()
    return Response(data, media_type=ASSETS[name], headers={"Cache-Control": "no-cache", **PAGE_HEADERS})


@router.get("/", include_in_schema=False)
async def index() -> Response:
    return _asset("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    return _asset(name)
