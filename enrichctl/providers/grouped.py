"""Serving many daily series from a few grouped-daily responses (one per date, whole market)."""

from __future__ import annotations

import logging
from typing import Any

from enrichctl.domain import AssetClass, Bars, Series
from enrichctl.errors import ProviderError, TemporaryError
from enrichctl.logs import get_logger, log_event
from enrichctl.providers.base import GroupedDailySource, Provider

log = get_logger("grouped")


class GroupedCache:
    """A provider that answers ``fetch_bars`` for the planned series from grouped responses
    fetched once per run, and passes everything else (and every symbol the grouped responses
    lacked) to the provider it wraps."""

    def __init__(self, inner: Provider, bars: dict[str, Bars], series: frozenset[Series]) -> None:
        self.inner = inner
        self.name = inner.name
        self.synthetic = inner.synthetic
        # It answers bars only: the run asks reference data and grouped days of the inner one.
        self.supports_grouped_daily = False
        self.supports_reference = False
        self._bars = bars
        self._series = series

    def requests_needed(self, series: Series, start_ms: int, end_ms: int) -> int:
        return self.inner.requests_needed(series, start_ms, end_ms)

    async def fetch_bars(self, series: Series, start_ms: int, end_ms: int) -> Bars:
        bars = self._bars.get(series.symbol) if series in self._series else None
        if bars is None:
            return await self.inner.fetch_bars(series, start_ms, end_ms)
        return bars.take((bars.ts >= start_ms) & (bars.ts <= end_ms))

    async def aclose(self) -> None:
        await self.inner.aclose()

    def resilience_status(self) -> dict[str, Any] | None:
        status = getattr(self.inner, "resilience_status", None)
        return status() if callable(status) else None


async def grouped_prefetch(provider: GroupedDailySource, days: tuple[str, ...], series: frozenset[Series]) -> dict[str, Bars]:
    """symbol -> its day bars from one grouped request per date. A date that cannot be fetched
    leaves its symbols to per-series requests (they are simply absent from the result)."""
    wanted = {s.symbol for s in series}
    parts: dict[str, list[Bars]] = {}
    for day in days:
        try:
            found = await provider.fetch_grouped_daily(day, asset_class=AssetClass.STOCK, symbols=wanted)
        except (ProviderError, TemporaryError) as exc:
            log_event(log, logging.WARNING, "enrichment_grouped_failed", day=day, error=exc.message)
            return {}  # a hole in the days would look like a gap: fall back to per-series requests
        for symbol, bars in found.items():
            parts.setdefault(symbol, []).append(bars)
    # A symbol missing on some date (halted, delisted, late) is fetched on its own instead: a
    # partial answer would move its watermark past the missing day.
    return {
        symbol: Bars.concat(p).sorted()
        for symbol, p in parts.items() if sum(len(b) for b in p) == len(days)
    }
