"""The dashboard page of ``serve``: ``/`` and its two assets, read once from package data.

The page is self-contained (no CDN, no build step) and served with a Content-Security-Policy
that allows only its own script and style: no inline script, nothing from elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from enrichctl.web.params import symbol_param

STATIC_FILES = {"common.js": "text/javascript", "app.js": "text/javascript", "app.css": "text/css",
                "symbol.js": "text/javascript", "symbol.css": "text/css",
                "vendor/lightweight-charts.standalone.production.js": "text/javascript",
                "vendor/lightweight-charts.LICENSE": "text/plain"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The charting library adds one fixed <style> element (its attribution logo's): the symbol page
# allows exactly that text by its hash, nothing else beyond the dashboard's policy.
CHART_STYLE_HASH = "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='"
SYMBOL_PAGE_CSP = PAGE_CSP.replace("style-src 'self'", f"style-src 'self' {CHART_STYLE_HASH}")


def _static(name: str) -> bytes:
    return (resources.files("enrichctl.web") / "static" / name).read_bytes()


def page_routes() -> list[web.RouteDef]:
    """GET ``/``, ``/symbol/{symbol}`` and ``/static/<asset>``."""
    page = _static("index.html")
    symbol_page = _static("symbol.html")
    assets = {name: (_static(name), ctype) for name, ctype in STATIC_FILES.items()}

    async def index(_request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": PAGE_CSP})

    async def symbol(request: web.Request) -> web.Response:
        symbol_param(request.match_info["symbol"])  # 400 before a page that could only fail
        return web.Response(body=symbol_page, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": SYMBOL_PAGE_CSP})

    def asset(body: bytes, ctype: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=ctype, charset="utf-8")
        return handler

    pages = [web.get("/", index), web.get("/symbol/{symbol}", symbol)]
    return pages + [web.get(f"/static/{n}", asset(*a)) for n, a in assets.items()]
