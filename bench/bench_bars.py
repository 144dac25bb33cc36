"""The symbol page's data on a long one-minute series: ``GET .../series/{symbol}/1m/bars``.

Builds a SQLite database through the store (the real schema), fills one 1m series with N bars
(default 500,000: about a year of round-the-clock crypto minutes) and their indicator rows with
raw ``sqlite3``, then times, in a child process through ``Session.series_bars`` (what a request
costs without HTTP):

- the whole range bucketed to 3,000 points (the page's "All"), with one indicator;
- the last 30 days bucketed the same way;
- one full-detail page of 5,000 rows;
- the whole series unbucketed as the export rows (what an endpoint without buckets would
  have to build).

Floor, measured in the same run: stdlib ``sqlite3`` reading the series' ts and OHLCV once
(``fetchall``), the least any answer covering the whole series could cost. Target: the whole
range bucketed within 1.5x the floor. Timings are printed, never asserted.

    python bench/bench_bars.py [--bars 500000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_serve import _env, config_write, schema_create

MINUTE_MS = 60_000
# Any answer covering the whole series reads every bar once (the floor); bucketing may cost
# half a read more (the database sorts the rows into buckets), never the 10x of shipping them.
TARGET_RATIO = 1.5

CHILD = """
import asyncio, json, sys, time
from enrichctl import service
from enrichctl.domain import Timeframe
from enrichctl.chartbars import BarsQuery
from enrichctl.settings import settings_load
last, repeat = int(sys.argv[1]), int(sys.argv[2])
CASES = {
    "all, bucketed to 3000": BarsQuery("X:BTCUSD", Timeframe.M1, None, None, ("sma_20",), 10000, 3000),
    "last 30 days, bucketed to 3000": BarsQuery("X:BTCUSD", Timeframe.M1, last - 30 * 86_400_000, None,
                                                ("sma_20",), 10000, 3000),
    "one page of 5000 bars": BarsQuery("X:BTCUSD", Timeframe.M1, None, None, ("sma_20",), 5000, None),
}
async def main():
    out = {}
    async with service.session_open(settings_load()) as session:
        for name, query in CASES.items():
            best, doc = float("inf"), None
            for _ in range(repeat):
                began = time.perf_counter()
                doc = await session.series_bars(query)
                body = json.dumps(doc, separators=(",", ":"))
                best = min(best, time.perf_counter() - began)
            out[name] = {"seconds": best, "rows": doc["count"], "bytes": len(body),
                         "bucket_ms": doc["bucket_ms"]}
        from enrichctl import exports
        series = await exports.series_of(session.store, "X:BTCUSD", Timeframe.M1)
        best = float("inf")
        for _ in range(repeat):
            began = time.perf_counter()
            bars = await session.store.bars_range(series)
            header, rows = exports.table_of(bars, {})
            body = json.dumps(exports.row_docs(header, rows), separators=(",", ":"))
            best = min(best, time.perf_counter() - began)
        out["whole series, unbucketed export rows"] = {"seconds": best, "rows": len(rows),
                                                       "bytes": len(body), "bucket_ms": None}
    print(json.dumps(out))
asyncio.run(main())
"""


def fill(db: Path, n: int) -> int:
    """N one-minute bars of X:BTCUSD ending now, and indicator rows with sma_20; the last ts."""
    rng = random.Random(11)
    last = (int(time.time() * 1000) // MINUTE_MS - 1) * MINUTE_MS
    first = last - (n - 1) * MINUTE_MS
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    price, bars, indicators, window = 30_000.0, [], [], []
    for i in range(n):
        price *= 1 + rng.gauss(0, 0.0005)
        ts = first + i * MINUTE_MS
        bars.append(("X:BTCUSD", "1m", ts, price, price * 1.0005, price * 0.9995, price,
                     rng.uniform(1, 50), price, rng.randint(10, 500)))
        window = [*window[-19:], price]
        indicators.append(("X:BTCUSD", "1m", ts, sum(window) / 20 if len(window) == 20 else None))
    with conn:
        conn.executemany("INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, "
                         "vwap, trades) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", bars)
        conn.executemany("INSERT INTO indicators (symbol, timeframe, ts, sma_20) VALUES (?, ?, ?, ?)",
                         indicators)
        conn.execute(
            "INSERT INTO series (symbol, timeframe, asset_class, provider, synthetic, watermark, first_ts, "
            "bar_count, quality_score, issue_count, last_attempt_at, last_success_at, last_checked_at, "
            "updated_at) VALUES ('X:BTCUSD', '1m', 'crypto', 'demo', 1, ?, ?, ?, 1.0, 0, ?, ?, ?, ?)",
            (last, first, n, last, last, last, last))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return last


def floor_time(db: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        conn = sqlite3.connect(db)
        began = time.perf_counter()
        rows = conn.execute("SELECT ts, open, high, low, close, volume FROM bars "
                            "WHERE symbol = 'X:BTCUSD' AND timeframe = '1m' ORDER BY ts").fetchall()
        best = min(best, time.perf_counter() - began)
        conn.close()
        assert rows
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="enrichctl-bench-bars-") as tmp:
        directory = Path(tmp)
        db = directory / "bench.db"
        config = config_write(directory, db, ["X:BTCUSD"])
        schema_create(config)
        last = fill(db, args.bars)
        floor = floor_time(db, args.repeat)
        child = subprocess.run([sys.executable, "-c", CHILD, str(last), str(args.repeat)], env=_env(config),
                               capture_output=True, text=True, check=False)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        cases = json.loads(child.stdout)
    if args.json:
        print(json.dumps({"bars": args.bars, "floor_seconds": floor, "cases": cases}, indent=2))
        return 0
    print(f"1m series of {args.bars:,} bars; floor (sqlite3 reads ts+OHLCV once): {floor * 1000:.0f} ms")
    for name, c in cases.items():
        ratio = c["seconds"] / floor
        verdict = ""
        if name.startswith("all, bucketed"):
            verdict = "  ok" if ratio <= TARGET_RATIO else "  OVER TARGET"
        print(f"  {name:40s} {c['seconds'] * 1000:8.0f} ms  {ratio:5.2f}x floor  {c['rows']:>7,} rows  "
              f"{c['bytes'] / 1e6:7.2f} MB{verdict}")
    print(f"target: the whole range bucketed within {TARGET_RATIO}x the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
