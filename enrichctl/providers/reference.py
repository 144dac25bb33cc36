"""Polygon's reference data: splits, dividends and a ticker's own record.

Splits and dividends are asked for the whole universe at once (``execution_date.gte`` /
``ex_dividend_date.gte``), paginated with ``next_url``; a ticker's record answers "does this
ticker exist, is it still listed" when a new series' first fetch returned nothing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from enrichctl.domain import CorporateAction
from enrichctl.errors import PermanentProviderError

MAX_PAGES = 50
PAGE_LIMIT = "1000"


class TickerState(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"  # delisted
    UNKNOWN = "unknown"  # the provider has never heard of it


@runtime_checkable
class ReferenceSource(Protocol):
    """What a provider offers beyond bars when it declares ``supports_reference`` (providers
    without it skip these checks)."""

    async def corporate_actions(self, kind: str, since: str) -> list[CorporateAction]: ...

    async def ticker_state(self, symbol: str) -> TickerState: ...


async def polygon_actions(client: Any, kind: str, since: str) -> list[CorporateAction]:
    """Every split (or dividend) of any ticker from ``since`` (YYYY-MM-DD) on."""
    if kind == "split":
        path, params = "/v3/reference/splits", {"execution_date.gte": since}
    else:
        path, params = "/v3/reference/dividends", {"ex_dividend_date.gte": since}
    params = {**params, "limit": PAGE_LIMIT}
    url = client._url(path)
    found: list[CorporateAction] = []
    for _ in range(MAX_PAGES):
        body = await client._get(url, params, None, "ref", "splits" if kind == "split" else "dividends")
        for r in body.get("results") or []:
            found.append(_action_of(kind, r, path))
        next_url = body.get("next_url")
        if not next_url:
            return found
        url, params = client._follow(str(next_url)), None
    raise PermanentProviderError(f"Polygon kept paginating {path} past {MAX_PAGES} pages")


def _action_of(kind: str, r: dict[str, Any], path: str) -> CorporateAction:
    try:
        if kind == "split":
            ratio = float(r["split_to"]) / float(r["split_from"])
            return CorporateAction(str(r["ticker"]), "split", str(r["execution_date"]), ratio=ratio)
        return CorporateAction(str(r["ticker"]), "dividend", str(r["ex_dividend_date"]),
                               amount=float(r["cash_amount"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise PermanentProviderError(
            f"Polygon sent a {kind} we cannot read from {path} ({type(exc).__name__})"
        ) from None


async def polygon_ticker_state(client: Any, symbol: str) -> TickerState:
    url = client._url(f"/v3/reference/tickers/{symbol}")
    try:
        body = await client._get(url, None, symbol, "ref", "ticker")
    except PermanentProviderError as exc:
        if exc.status == 404:
            return TickerState.UNKNOWN
        raise
    results = body.get("results") or {}
    return TickerState.ACTIVE if results.get("active", True) else TickerState.INACTIVE
