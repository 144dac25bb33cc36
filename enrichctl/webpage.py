"""The dashboard page of ``serve``: ``/`` and its two assets, read once from package data.

The page is self-contained (no CDN, no build step) and served with a Content-Security-Policy
that allows only its own script and style: no inline script, nothing from elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _static(name: str) -> bytes:
    return (resources.files("enrichctl") / "static" / name).read_bytes()


def page_routes() -> list[web.RouteDef]:
    """GET ``/`` and ``/static/<asset>``."""
    page = _static("index.html")
    assets = {name: (_static(name), ctype) for name, ctype in STATIC_FILES.items()}

    async def index(_request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": PAGE_CSP})

    def asset(body: bytes, ctype: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=ctype, charset="utf-8")
        return handler

    return [web.get("/", index)] + [web.get(f"/static/{n}", asset(*a)) for n, a in assets.items()]
