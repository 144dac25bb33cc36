"""Validation of what ``serve`` accepts: symbols, limits, asset classes, the pause reason.

Each function returns the parsed value or raises ``UsageError`` (HTTP 400) with one line saying
what is wrong. The bounds here are the ones ``openapi.py`` publishes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from enrichctl.domain import SYMBOL_PATTERN as SYMBOL_PATTERN  # openapi publishes the rule
from enrichctl.domain import AssetClass, Trigger, parse_symbol
from enrichctl.errors import UsageError
from enrichctl.service import RunOptions

HISTORY_DEFAULT = 20
HISTORY_MAX = 1000
TRIGGER_MAX_SYMBOLS = 100
REASON_MAX = 500
_INT_RE = re.compile(r"[0-9]{1,7}", re.ASCII)


def symbol_param(text: str) -> str:
    """The CLI's rule exactly (``domain.parse_symbol``), as a 400."""
    try:
        return parse_symbol(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def query_check(query: MultiMapping[str], allowed: tuple[str, ...]) -> None:
    """An unknown parameter is an error, not ignored: ``?limt=5`` must not silently mean 20."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise UsageError(f"unknown query parameter(s) {', '.join(map(repr, unknown))[:100]}; "
                         f"accepted: {accepted}")
    for name in allowed:
        if name != "symbols" and len(query.getall(name, [])) > 1:
            raise UsageError(f"query parameter {name!r} given more than once")


def history_limit(query: MultiMapping[str]) -> int:
    query_check(query, ("limit",))
    raw = query.get("limit")
    if raw is None:
        return HISTORY_DEFAULT
    if not _INT_RE.fullmatch(raw) or not 1 <= int(raw) <= HISTORY_MAX:
        raise UsageError(f"invalid limit {raw[:20]!r}: expected an integer from 1 to {HISTORY_MAX}")
    return int(raw)


def trigger_options(query: MultiMapping[str]) -> RunOptions:
    """``symbols`` (repeated, at most 100; none = the configured universe) and ``asset_class``."""
    query_check(query, ("symbols", "asset_class"))
    raw_symbols = query.getall("symbols", [])
    if len(raw_symbols) > TRIGGER_MAX_SYMBOLS:
        raise UsageError(f"too many symbols ({len(raw_symbols)}): at most {TRIGGER_MAX_SYMBOLS} per trigger")
    symbols = list(dict.fromkeys(symbol_param(s) for s in raw_symbols))
    asset_class = None
    if (raw_class := query.get("asset_class")) is not None:
        try:
            asset_class = AssetClass(raw_class)
        except ValueError:
            choices = ", ".join(a.value for a in AssetClass)
            raise UsageError(f"invalid asset_class {raw_class[:20]!r}: expected one of {choices}") from None
    return RunOptions(symbols=symbols or None, asset_class=asset_class, trigger=Trigger.API)


async def pause_reason(request: web.Request, read_timeout: float) -> str | None:
    """The reason from a JSON body ``{"reason": ...}``, else from the ``reason`` query; both are
    validated when given. A body still incomplete after ``read_timeout`` seconds is a 408."""
    query_check(request.query, ("reason",))
    reason = _reason(request.query.get("reason"))
    if request.can_read_body:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(reason="send the pause reason as application/json")
        try:
            async with asyncio.timeout(read_timeout):
                body = await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(reason=f"the body did not arrive within {read_timeout:g} s") from None
        doc = _json_object(body)
        unknown = set(doc) - {"reason"}
        if unknown:
            raise UsageError(f"unknown field(s) in the body: {', '.join(sorted(unknown))[:100]}")
        if (value := doc.get("reason")) is not None and not isinstance(value, str):
            raise UsageError("reason must be a string")
        reason = _reason(value) or reason
    return reason


def _reason(text: str | None) -> str | None:
    if text is None:
        return None
    # An empty value is refused rather than read as "no reason": in a query string it is also
    # what a client's null or empty list turns into.
    if not 1 <= len(text) <= REASON_MAX:
        raise UsageError(f"reason must have 1 to {REASON_MAX} characters (it has {len(text)}); "
                         "leave it out to give none")
    return text.strip() or None


def _json_object(body: bytes) -> Mapping[str, Any]:
    try:
        doc = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, ValueError):
        raise UsageError("the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise UsageError("the body must be a JSON object")
    return doc
