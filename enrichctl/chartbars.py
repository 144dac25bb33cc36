"""A stored series' bars for a chart (``GET .../series/{symbol}/{timeframe}/bars``, and
``Session.series_bars``).

The rows are the rows of ``export --format jsonl`` (``exports.row_docs``), with the indicator
columns asked for. A long range comes back either in pages (``limit`` rows, then ``next_start``)
or, with ``max_points``, merged into time buckets by the database (open of the first bar, highest
high, lowest low, close of the last bar, summed volume; indicators as of the bucket's last bar),
so a chart of years of one-minute bars reads a few thousand rows, not millions. The query is
parsed by the face (``web/seriesbars.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from enrichctl import exports
from enrichctl.domain import Series, Timeframe, ms_to_iso
from enrichctl.store.repo import Store

ISSUES_MAX = 1000


@dataclass(frozen=True, slots=True)
class BarsQuery:
    symbol: str
    timeframe: Timeframe
    start: int | None  # epoch ms, inclusive
    end: int | None  # epoch ms, inclusive
    indicators: tuple[str, ...]
    limit: int
    max_points: int | None


async def bars_document(store: Store, q: BarsQuery) -> dict[str, Any]:
    """The bars (paged or bucketed), the indicator columns asked for, and the series' recorded
    quality issues in the range (for marking them on the time axis)."""
    series = await exports.series_of(store, q.symbol, q.timeframe)
    points = min(q.max_points or q.limit, q.limit)
    bucket_ms, next_start = None, None
    # Whether to bucket without counting the range: a count alone scans every bar in it.
    if q.max_points is not None and await store.bars_more_than(series, q.start, q.end, points):
        first, last = await store.bars_range_ends(series, q.start, q.end)
        assert first is not None and last is not None  # more than `points` bars lie there
        bucket_ms = q.timeframe.ms * math.ceil((last - first + 1) / (points * q.timeframe.ms))
        bars, closes_at, total = await store.bars_bucketed(series, q.start, q.end, first, bucket_ms)
    else:
        bars = await store.bars_page(series, q.start, q.end, q.limit + 1)
        total = len(bars)
        if len(bars) > q.limit:
            next_start = ms_to_iso(int(bars.ts[q.limit]))
            bars = bars.take(slice(0, q.limit))
            total = await store.bars_range_count(series, q.start, q.end)
        closes_at = bars.ts
    columns = await _indicator_columns(store, series, q.indicators, bars.ts, closes_at)
    header, rows = exports.table_of(bars, columns)
    return {
        "symbol": q.symbol, "timeframe": q.timeframe.value,
        "start": ms_to_iso(q.start), "end": ms_to_iso(q.end),
        "total": total, "count": len(rows), "bucket_ms": bucket_ms, "next_start": next_start,
        "indicators": list(q.indicators), "available_indicators": list(store.indicator_names),
        "issues": await _issues(store, series, q.start, q.end),
        "bars": exports.row_docs(header, rows),
    }


async def _indicator_columns(store: Store, series: Series, names: tuple[str, ...],
                             ts: np.ndarray, closes_at: np.ndarray) -> dict[str, np.ndarray]:
    """The chosen columns on the rows: the value at each row's last bar (its only bar unless
    bucketed)."""
    if not names or not len(ts):
        return {n: np.empty(0) for n in names}
    ind_ts, stored = await store.indicators_at(series, closes_at.tolist())
    aligned = exports.align(closes_at, ind_ts, {n: stored[n] for n in names})
    return aligned


async def _issues(store: Store, series: Series, start: int | None, end: int | None) -> list[dict[str, Any]]:
    rows = await store.issues_recent(series.symbol, series.timeframe.value, ISSUES_MAX)
    inside = [i for i in rows if i.ts is None or ((start is None or i.ts >= start)
                                                 and (end is None or i.ts <= end))]
    return [{"kind": i.kind, "severity": i.severity, "at": ms_to_iso(i.ts), "detail": i.detail,
             "run_id": i.run_id} for i in sorted(inside, key=lambda i: (i.ts or 0, i.id))]
