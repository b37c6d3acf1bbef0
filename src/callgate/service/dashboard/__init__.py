"""The headroom page: ``GET /`` and its two assets, shipped in the package, no build step.

Everything the page needs is in this folder (``index.html``, ``dashboard.css``,
``dashboard.js``: plain JavaScript, no framework, nothing fetched from elsewhere) and is
served by ``callgate serve`` itself. The page and its assets are public: they hold no
data. The data comes from ``GET /v1/usage/stream`` (:mod:`callgate.service.stream`),
which asks for a token when the API has tokens; the page asks for one once and keeps it
in ``sessionStorage`` (gone when the tab closes). A Content-Security-Policy that allows
only this origin backs the promise that the page never loads anything from elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def read_asset(name: str) -> bytes:
    """One of the page's files, from the installed package."""
    return files(__name__).joinpath(name).read_bytes()


def dashboard_router() -> APIRouter:
    """``GET /`` (the page) and ``GET /dashboard/{asset}``, read once from the package."""
    router = APIRouter(include_in_schema=False)
    page = read_asset("index.html")
    assets = {name: (read_asset(name), media) for name, media in ASSETS.items()}

    @router.get("/")
    def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    for name, (body, media) in assets.items():
        router.add_api_route(f"/dashboard/{name}", _serve(body, media), methods=["GET"])
    return router


def _serve(body: bytes, media_type: str) -> Callable[[], Response]:
    def asset() -> Response:
        return Response(body, media_type=media_type, headers=HEADERS)

    return asset
