"""The floor of the pipeline benchmark: the least any implementation must spend to store the rows.

Run as a script (its own process, so the benchmark's parent stays small and the peak RSS it
reads for the CLI is the CLI's own). It builds the very bar and indicator rows a demo run
stores -- same provider, same range, same indicator set -- without timing that, then times only
this: create a fresh SQLite file with the store's two table shapes (WAL, WITHOUT ROWID) and
``executemany`` every bar row and every indicator row in ONE transaction with stdlib ``sqlite3``.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from enrichctl.calendar import SessionCalendar, days_ago_ms
from enrichctl.domain import AssetClass, Bars, Series, Timeframe
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.providers.demo import DemoProvider
from enrichctl.settings import DEFAULT_INDICATORS


@dataclass(frozen=True, slots=True)
class FloorRows:
    """Rows in the column order of the store's tables (NaN already None, trades an int)."""

    bars: list[tuple]
    indicators: list[tuple]
    indicator_columns: tuple[str, ...]


def instant_ms(text: str) -> int:
    """The CLI's reading of ``--as-of``: ISO-8601, UTC when no zone is given."""
    moment = datetime.fromisoformat(text.removesuffix("Z"))
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


def floor_rows(symbols: list[str], as_of_ms: int, history_days: int) -> FloorRows:
    """The rows a fresh ``run --provider demo --timeframes 1d --as-of`` stores for ``symbols``:
    the plan's range (history_days back .. the last complete day bar), the demo provider's
    bars, and TA-Lib indicators over the whole series (a new series gets one row per bar)."""
    calendar = SessionCalendar()
    provider = DemoProvider(calendar, clock=lambda: as_of_ms)
    indicators = IndicatorSet(DEFAULT_INDICATORS)
    start = days_ago_ms(as_of_ms, history_days)
    bar_rows: list[tuple] = []
    indicator_rows: list[tuple] = []
    for symbol in symbols:
        series = Series(symbol, AssetClass.for_symbol(symbol), Timeframe.D1)
        end = calendar.last_complete_bar_start(series, as_of_ms)
        assert end is not None, f"no complete day bar before the as-of instant for {series}"
        bars = asyncio.run(provider.fetch_bars(series, start, end))
        key = (symbol, series.timeframe.value)
        bar_rows.extend(key + row for row in bars.rows())
        indicator_rows.extend(_indicator_rows(key, bars, indicators, series))
    return FloorRows(bar_rows, indicator_rows, indicators.columns)


def _indicator_rows(
    key: tuple[str, str], bars: Bars, indicators: IndicatorSet, series: Series
) -> list[tuple]:
    values = indicators.compute(bars, series.timeframe.periods_per_year(series.asset_class))
    matrix = np.column_stack([values[c] for c in indicators.columns])
    cells = matrix.astype(object)
    cells[np.isnan(matrix)] = None
    return [key + (ts, *row) for ts, row in zip(bars.ts.tolist(), cells.tolist(), strict=True)]


def floor_write(path: str, rows: FloorRows) -> tuple[float, float]:
    """(wall, CPU) seconds to create the database at ``path`` and insert ``rows`` in one
    transaction, closing included (the last close checkpoints the WAL, as the CLI's does)."""
    value_columns = ", ".join(f"{name} FLOAT" for name in rows.indicator_columns)
    started, cpu_started = time.perf_counter(), time.process_time()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # what the store sets
    conn.execute(
        "CREATE TABLE bars (symbol VARCHAR(32) NOT NULL, timeframe VARCHAR(8) NOT NULL, "
        "ts BIGINT NOT NULL, open FLOAT NOT NULL, high FLOAT NOT NULL, low FLOAT NOT NULL, "
        "close FLOAT NOT NULL, volume FLOAT, vwap FLOAT, trades BIGINT, "
        "PRIMARY KEY (symbol, timeframe, ts)) WITHOUT ROWID"
    )
    conn.execute(
        "CREATE TABLE indicators (symbol VARCHAR(32) NOT NULL, timeframe VARCHAR(8) NOT NULL, "
        f"ts BIGINT NOT NULL, {value_columns}, PRIMARY KEY (symbol, timeframe, ts)) WITHOUT ROWID"
    )
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO bars VALUES ({', '.join('?' * 10)})", rows.bars)
    marks = ", ".join("?" * (3 + len(rows.indicator_columns)))
    conn.executemany(f"INSERT INTO indicators VALUES ({marks})", rows.indicators)
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started, time.process_time() - cpu_started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="SQLite file to create (must not exist)")
    parser.add_argument("--symbols", required=True, help="comma-separated tickers")
    parser.add_argument("--as-of", required=True, help="the instant the CLI run pretends it is")
    parser.add_argument("--history-days", type=int, required=True)
    args = parser.parse_args(argv)
    generated = time.perf_counter()
    rows = floor_rows(args.symbols.split(","), instant_ms(args.as_of), args.history_days)
    generated = time.perf_counter() - generated
    seconds, cpu_seconds = floor_write(args.db, rows)
    json.dump(
        {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "generate_seconds": generated,
            "bars": len(rows.bars),
            "indicator_rows": len(rows.indicators),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
