"""Reading stored series back out: ``export`` (CSV/JSONL) and ``verify`` (re-check, recompute)."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from enrichctl.domain import AssetClass, Series, Timeframe, ms_to_iso
from enrichctl.errors import ConfigError, NotFound
from enrichctl.pipeline.calendar import SessionCalendar
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.pipeline.quality import check_stored, quality_score
from enrichctl.service import store_open
from enrichctl.settings import Settings
from enrichctl.store.repo import Store

# Stored indicator values must equal a recompute over the whole series this closely.
VERIFY_RTOL = 1e-9


@dataclass(frozen=True, slots=True)
class ExportRequest:
    symbol: str
    timeframe: Timeframe
    start: int | None
    end: int | None
    indicators: bool
    fmt: str  # "csv" | "jsonl"


async def _series_of(store: Store, symbol: str, timeframe: Timeframe) -> Series:
    rows = [r for r in await store.series_list(symbol) if r.timeframe == timeframe.value]
    if not rows:
        raise NotFound(f"no stored series {symbol}/{timeframe.value}")
    return Series(symbol, AssetClass(rows[0].asset_class), timeframe)


async def export(settings: Settings, request: ExportRequest, output: Path | None) -> int:
    """Write the bars (and indicator columns) ordered by time; returns how many."""
    async with store_open(settings) as store:
        series = await _series_of(store, request.symbol, request.timeframe)
        bars = await store.bars_range(series, request.start, request.end)
        columns: dict[str, np.ndarray] = {}
        if request.indicators:
            ind_ts, columns = await store.indicators_range(series, request.start, request.end)
            columns = _align(bars.ts, ind_ts, columns)
    header = ["ts", "time", "open", "high", "low", "close", "volume", "vwap", "trades", *columns]
    data = [bars.ts.tolist(), [ms_to_iso(t) for t in bars.ts.tolist()],
            *(getattr(bars, n).tolist() for n in ("open", "high", "low", "close", "volume", "vwap", "trades")),
            *(v.tolist() for v in columns.values())]
    rows = list(zip(*data, strict=True)) if len(bars) else []
    try:
        handle: TextIO = output.open("w", newline="") if output else sys.stdout
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror}") from None
    try:
        _write(handle, request.fmt, header, rows)
    finally:
        if output:
            handle.close()
    return len(rows)


def _align(ts: np.ndarray, ind_ts: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Indicator values on the bars' timestamps (NaN where a row is missing)."""
    if np.array_equal(ts, ind_ts):
        return columns
    index = np.searchsorted(ind_ts, ts)
    index = np.clip(index, 0, max(len(ind_ts) - 1, 0))
    found = (ind_ts[index] == ts) if len(ind_ts) else np.zeros(len(ts), bool)
    return {n: np.where(found, v[index] if len(v) else np.nan, np.nan) for n, v in columns.items()}


INTEGER_COLUMNS = ("ts", "volume", "trades")


def _clean(name: str, value: Any) -> Any:
    """NaN -> None; whole volumes and trade counts as integers (not 12095.0)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if name in INTEGER_COLUMNS and value.is_integer() and abs(value) < 2**53:
            return int(value)
    return value


def _write(handle: TextIO, fmt: str, header: list[str], rows: list[tuple]) -> None:
    if fmt == "jsonl":
        buffer = io.StringIO()
        for row in rows:
            doc = {name: _clean(name, value) for name, value in zip(header, row, strict=True)}
            buffer.write(json.dumps(doc, allow_nan=False))
            buffer.write("\n")
        handle.write(buffer.getvalue())
        return
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_value(name, v) for name, v in zip(header, row, strict=True)])


def _csv_value(name: str, value: Any) -> Any:
    value = _clean(name, value)
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value


async def verify(settings: Settings, symbol: str | None, recompute: bool) -> dict[str, Any]:
    """Re-check every stored series (or one symbol's); ``ok`` is False when anything is off."""
    calendar = SessionCalendar()
    indicators = IndicatorSet(settings.indicators)
    out: list[dict[str, Any]] = []
    async with store_open(settings) as store:
        rows = await store.series_list(symbol)
        if symbol is not None and not rows:
            raise NotFound(f"no stored series for {symbol}")
        for row in rows:
            series = Series(row.symbol, AssetClass(row.asset_class), Timeframe(row.timeframe))
            out.append(await _verify_series(store, series, calendar, indicators, settings, recompute))
    return {"ok": all(s["ok"] for s in out), "recompute": recompute, "series": out}


async def _verify_series(
    store: Store, series: Series, calendar: SessionCalendar, indicators: IndicatorSet,
    settings: Settings, recompute: bool,
) -> dict[str, Any]:
    bars = await store.bars_range(series)
    issues = check_stored(series, bars, calendar, settings.quality)
    for ts, n in await store.bars_duplicates(series):
        issues.append(_dup_issue(ts, n))
    doc: dict[str, Any] = {
        "series": str(series),
        "bars": len(bars),
        "quality_score": round(quality_score(len(bars), issues), 4),
        "issues": [{"kind": i.kind.value, "severity": i.severity.value, "at": ms_to_iso(i.ts), "detail": i.detail} for i in issues],
    }
    off = any(i.severity.value == "error" for i in issues) or any(i.kind.value == "gap" for i in issues)
    if recompute:
        expected = indicators.compute(bars, series.timeframe.periods_per_year(series.asset_class))
        ind_ts, stored = await store.indicators_range(series)
        diff, where = _max_relative_diff(bars.ts, expected, ind_ts, stored)
        doc["max_indicator_diff"] = diff
        doc["max_indicator_diff_at"] = where
        if diff is None or diff > VERIFY_RTOL:
            off = True
    doc["ok"] = not off
    return doc


def _dup_issue(ts: int, n: int):
    from enrichctl.domain import IssueKind, QualityIssue, Severity

    return QualityIssue(IssueKind.DUPLICATE, Severity.ERROR, f"{n} rows stored for {ms_to_iso(ts)}", ts)


def _max_relative_diff(
    ts: np.ndarray, expected: dict[str, np.ndarray], ind_ts: np.ndarray, stored: dict[str, np.ndarray]
) -> tuple[float | None, str | None]:
    """Largest relative difference between recomputed and stored values (inf when a value is
    missing on one side only); None when indicator rows and bars do not line up at all."""
    if not np.array_equal(ts, ind_ts):
        return None, "indicator rows do not match the stored bars"
    worst, where = 0.0, None
    for name, want in expected.items():
        have = stored.get(name)
        if have is None:
            return None, f"column {name} is not stored"
        nan_mismatch = np.isnan(want) != np.isnan(have)
        if nan_mismatch.any():
            return math.inf, f"{name} at {ms_to_iso(int(ts[np.argmax(nan_mismatch)]))}"
        both = ~np.isnan(want)
        if not both.any():
            continue
        scale = np.maximum(np.maximum(np.abs(want[both]), np.abs(have[both])), 1e-12)
        rel = np.abs(want[both] - have[both]) / scale
        i = int(np.argmax(rel))
        if rel[i] > worst:
            worst, where = float(rel[i]), f"{name} at {ms_to_iso(int(ts[both][i]))}"
    return worst, where
