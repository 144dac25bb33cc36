"""What is stored (``enrichctl series list``) and removing it (``enrichctl series remove``).

The list is one document, as ``--json`` prints it: every stored series with its first and last
bar, bar count, provider (synthetic data marked), quality score and whether it is stale.
"""

from __future__ import annotations

from typing import Any

from enrichctl import dashboard
from enrichctl.calendar import SessionCalendar
from enrichctl.domain import ms_to_iso
from enrichctl.errors import NotFound
from enrichctl.settings import Settings
from enrichctl.store.repo import Store


async def series_inventory(store: Store, settings: Settings, calendar: SessionCalendar, now: int) -> dict[str, Any]:
    rows = await store.series_list()
    configured = {e.symbol for e in settings.universe}
    series = [
        {
            "symbol": r.symbol,
            "timeframe": r.timeframe,
            "asset_class": r.asset_class,
            "first_bar": ms_to_iso(r.first_ts),
            "last_bar": ms_to_iso(r.watermark),
            "bars": r.bar_count,
            "provider": r.provider,
            "synthetic": bool(r.synthetic),
            "quality_score": None if r.quality_score is None else round(r.quality_score, 4),
            "issues": r.issue_count,
            "stale": dashboard.series_stale(r, calendar, settings, now),
            "delisted": r.delisted_at is not None,
            "configured": r.symbol in configured,
            "last_success": ms_to_iso(r.last_success_at),
        }
        for r in rows
    ]
    return {
        "generated_at": ms_to_iso(now),
        "count": len(series),
        "bars": sum(s["bars"] for s in series),
        "series": series,
    }


async def series_remove(
    store: Store, settings: Settings, symbol: str, timeframe: str | None, *, confirmed: bool
) -> dict[str, Any]:
    """Remove a stored series (or every series of ``symbol``) with its indicators, quality
    issues and records. Unconfirmed, it only says what would go."""
    rows = [r for r in await store.series_list(symbol) if timeframe is None or r.timeframe == timeframe]
    if not rows:
        what = f"{symbol}/{timeframe}" if timeframe else symbol
        raise NotFound(f"nothing stored for {what}; 'enrichctl series list' shows what is")
    configured = any(e.symbol == symbol for e in settings.universe)
    doc: dict[str, Any] = {
        "symbol": symbol,
        "timeframes": [r.timeframe for r in rows],
        "bars": sum(r.bar_count for r in rows),
        "removed": False,
        "still_configured": configured,
    }
    if confirmed:
        doc["deleted"] = await store.series_remove(symbol, timeframe)
        doc["removed"] = True
    return doc
