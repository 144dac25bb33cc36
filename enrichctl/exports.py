"""Reading stored series back out: ``export`` (CSV/JSONL); ``verify`` lives in ``verify.py``."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from enrichctl.domain import AssetClass, Bars, Series, Timeframe, ms_to_iso
from enrichctl.errors import ConfigError, EnrichError, NotFound
from enrichctl.service import store_open
from enrichctl.settings import Settings
from enrichctl.store.repo import Store
from enrichctl.store.rows import SeriesRow


@dataclass(frozen=True, slots=True)
class ExportRequest:
    symbol: str
    timeframe: Timeframe
    start: int | None
    end: int | None
    indicators: bool
    fmt: str  # "csv" | "jsonl"


async def series_row_of(store: Store, symbol: str, timeframe: Timeframe) -> SeriesRow:
    rows = [r for r in await store.series_list(symbol) if r.timeframe == timeframe.value]
    if not rows:
        raise NotFound(f"no stored series {symbol}/{timeframe.value}")
    return rows[0]


async def series_of(store: Store, symbol: str, timeframe: Timeframe) -> Series:
    row = await series_row_of(store, symbol, timeframe)
    return Series(symbol, AssetClass(row.asset_class), timeframe)


async def export(settings: Settings, request: ExportRequest, output: Path | None) -> int:
    """Write the bars (and indicator columns) ordered by time; returns how many."""
    async with store_open(settings) as store:
        row = await series_row_of(store, request.symbol, request.timeframe)
        series = Series(row.symbol, AssetClass(row.asset_class), request.timeframe)
        bars = await store.bars_range(series, request.start, request.end)
        columns: dict[str, np.ndarray] = {}
        if request.indicators:
            ind_ts, columns = await store.indicators_range(series, request.start, request.end)
            columns = align(bars.ts, ind_ts, columns)
    header, rows = table_of(bars, columns)
    # Provenance on every row, last (as in Parquet): synthetic data cannot pass for market data.
    header += ["provider", "synthetic"]
    rows = [(*r, row.provider, bool(row.synthetic)) for r in rows]
    try:
        handle: TextIO = output.open("w", newline="") if output else sys.stdout
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror}") from None
    try:
        _write(handle, request.fmt, header, rows)
        handle.flush()
        if output:
            handle.close()
    except BrokenPipeError:
        raise  # the reader (`| head`) has what it wanted: the CLI ends quietly
    except OSError as exc:  # a full disk, a quota, an I/O error: the cause, not a traceback
        if output:
            with contextlib.suppress(OSError):  # close flushes again, and fails again
                handle.close()
        raise EnrichError(f"cannot write {output or 'stdout'}: {exc.strerror or exc}") from None
    return len(rows)


def table_of(bars: Bars, columns: dict[str, np.ndarray]) -> tuple[list[str], list[tuple]]:
    """The export's header and rows: the bar fields, their time, then the indicator columns."""
    header = ["ts", "time", "open", "high", "low", "close", "volume", "vwap", "trades", *columns]
    data = [bars.ts.tolist(), [ms_to_iso(t) for t in bars.ts.tolist()],
            *(getattr(bars, n).tolist() for n in ("open", "high", "low", "close", "volume", "vwap", "trades")),
            *(v.tolist() for v in columns.values())]
    return header, (list(zip(*data, strict=True)) if len(bars) else [])


def row_docs(header: list[str], rows: list[tuple]) -> list[dict[str, Any]]:
    """The rows as ``export --format jsonl`` writes them (and the API's bars endpoint serves)."""
    return [{name: _clean(name, value) for name, value in zip(header, row, strict=True)} for row in rows]


def align(ts: np.ndarray, ind_ts: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
        for doc in row_docs(header, rows):
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
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else value
