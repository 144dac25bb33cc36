"""``GET /api/v1/enrichment/series/{symbol}/{timeframe}/bars``: a stored series' bars for a chart.

The rows are the rows of ``export --format jsonl`` (``exports.row_docs``), with the indicator
columns asked for. A long range comes back either in pages (``limit`` rows, then ``next_start``)
or, with ``max_points``, merged into time buckets by the database (open of the first bar, highest
high, lowest low, close of the last bar, summed volume; indicators as of the bucket's last bar),
so a chart of years of one-minute bars reads a few thousand rows, not millions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from multidict import MultiMapping

from enrichctl import exports
from enrichctl.domain import MS_PER_DAY, Series, Timeframe, ms_to_iso
from enrichctl.errors import UsageError
from enrichctl.store.repo import Store
from enrichctl.web.params import query_check, symbol_param

LIMIT_DEFAULT = 5000
LIMIT_MAX = 10_000
POINTS_MIN = 10
ISSUES_MAX = 1000
PARAMS = ("start", "end", "indicators", "limit", "max_points")
# RFC 3339 full-date and date-time, exactly what the OpenAPI formats "date" / "date-time" allow.
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_DATETIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII)
_INT_RE = re.compile(r"[0-9]{1,7}", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BarsQuery:
    symbol: str
    timeframe: Timeframe
    start: int | None  # epoch ms, inclusive
    end: int | None  # epoch ms, inclusive
    indicators: tuple[str, ...]
    limit: int
    max_points: int | None


def bars_query_parse(symbol: str, timeframe: str, query: MultiMapping[str],
                     available: tuple[str, ...]) -> BarsQuery:
    """The validated request; ``UsageError`` (400) with one line on anything wrong."""
    query_check(query, PARAMS)
    try:
        tf = Timeframe(timeframe)
    except ValueError:
        choices = ", ".join(t.value for t in Timeframe)
        raise UsageError(f"invalid timeframe {timeframe[:20]!r}: expected one of {choices}") from None
    start = _instant(query.get("start"), "start", end_of_day=False)
    end = _instant(query.get("end"), "end", end_of_day=True)
    if start is not None and end is not None and start > end:
        raise UsageError("start is after end: nothing lies between them")
    limit = _int(query.get("limit"), "limit", 1, LIMIT_MAX, LIMIT_DEFAULT)
    points = _int(query.get("max_points"), "max_points", POINTS_MIN, LIMIT_MAX, None)
    return BarsQuery(symbol_param(symbol), tf, start, end,
                     _indicators(query.get("indicators"), available), limit, points)


def _instant(text: str | None, name: str, end_of_day: bool) -> int | None:
    if text is None:
        return None
    if _DATE_RE.fullmatch(text):
        try:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise UsageError(f"invalid {name} {text!r}: no such date") from None
        ms = _ms(day)
        return ms + MS_PER_DAY - 1 if end_of_day else ms  # a date means the whole day
    if _DATETIME_RE.fullmatch(text):
        try:
            return _ms(datetime.fromisoformat(text.upper()))
        except ValueError:
            raise UsageError(f"invalid {name} {text[:40]!r}: no such time") from None
    raise UsageError(f"invalid {name} {text[:40]!r}: expected a date (2024-06-03) or an "
                     "RFC 3339 time (2024-06-03T13:30:00Z)")


def _ms(moment: datetime) -> int:
    # Subtraction, not .timestamp(): it cannot overflow at year 1 with a negative offset.
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _int(text: str | None, name: str, low: int, high: int, default: int | None) -> int | None:
    if text is None:
        return default
    if not _INT_RE.fullmatch(text) or not low <= int(text) <= high:
        raise UsageError(f"invalid {name} {text[:20]!r}: expected an integer from {low} to {high}")
    return int(text)


def _indicators(text: str | None, available: tuple[str, ...]) -> tuple[str, ...]:
    if not text:
        return ()
    names = tuple(dict.fromkeys(text.split(",")))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(f"unknown indicator(s) {', '.join(unknown)[:100]}; "
                         f"stored: {', '.join(available) or 'none'}")
    return names


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
