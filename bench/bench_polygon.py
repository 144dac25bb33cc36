"""Polygon client benchmark against the fake Polygon (``tests/integration/fake_polygon.py``) on
127.0.0.1, real sockets. Three figures, printed, never asserted:

1. **Quota.** The pipeline (``service.run``; its provider built with a short quota window so the
   run takes seconds, not minutes) against a server that allows R requests per rolling window
   and answers 429 beyond. Target: a sustained rate of at least 0.95 R per window and no 429.
   The floor is the contract itself, R per window.
2. **Unlimited.** The provider's requests/s and bars/s against a floor measured in the same run:
   plain aiohttp GET + ``json.loads`` of the very same URLs at the same concurrency (the
   provider's bulkhead). Then the whole pipeline's requests/s and bars/s, store included.
3. **Daily update of N stocks.** Requests for the last few sessions one series at a time versus
   grouped daily (one request per date); both are fetched and must give the same bars.

    python bench/bench_polygon.py [--rate 10] [--window 1.0] [--windows 6] [--symbols 1000] [--json]

Exit 1 only when the benchmark itself is broken (a run failed, or the two ways of fetching
disagree).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from fake_polygon import FakePolygon

from enrichctl import service
from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import BAR_FIELDS, MS_PER_DAY, AssetClass, Bars, Series, Timeframe
from enrichctl.providers.demo import DemoProvider
from enrichctl.providers.polygon import PolygonProvider
from enrichctl.settings import ResilienceSettings, Settings

KEY = "pk_bench_0123456789"
AS_OF = utc_date_ms("2025-06-02") + 12 * 3_600_000  # Monday 08:00 New York
RATE_TARGET = 0.95
UPDATE_DAYS = 3  # sessions a daily update catches up on (a long weekend, a missed run)


class Broken(Exception):
    """The benchmark itself is broken: its figures would mean nothing."""


def stock_1d(symbol: str) -> Series:
    return Series(symbol, AssetClass.STOCK, Timeframe.D1)


def settings_for(fake: FakePolygon, db: Path, symbols: list[str], rpm: int, days: int) -> Settings:
    return Settings(
        provider="polygon",
        polygon={"api_key": KEY, "base_url": fake.url, "requests_per_minute": rpm},
        database_url=f"sqlite:///{db}",
        universe=[{"symbol": s} for s in symbols],
        timeframes=("1d",),
        history_days={"1d": days},
        max_concurrent_symbols=16,
        retry_delay_seconds=0.0,
    )


async def hold_stocks(fake: FakePolygon, calendar: SessionCalendar, symbols: list[str], days: int) -> int:
    demo = DemoProvider(calendar, clock=lambda: AS_OF)
    held = [await fake.hold_from(demo, stock_1d(s), AS_OF - days * MS_PER_DAY, AS_OF) for s in symbols]
    return sum(len(b) for b in held)


async def quota(calendar: SessionCalendar, work: Path, rate: int, window: float, windows: int) -> dict[str, Any]:
    """The pipeline against a server budget of ``rate`` per ``window``: ``rate * windows`` series."""
    symbols = [f"Q{i:04d}" for i in range(rate * windows)]
    async with FakePolygon(api_key=KEY, budget=rate, window=window) as fake:
        await hold_stocks(fake, calendar, symbols, 40)
        settings = settings_for(fake, work / "quota.db", symbols, rate, 30)

        def provider(cal: SessionCalendar, sink, _clock) -> PolygonProvider:
            return PolygonProvider(settings.polygon, cal, sink=sink, rate_interval=window)

        started = time.perf_counter()
        report = await service.run(settings, service.RunOptions(as_of=AS_OF), provider_factory=provider)
        seconds = time.perf_counter() - started
        if service.exit_code_of(report) != 0:
            raise Broken(f"the rate-limited run failed: {report.error or report.status}")
        arrivals = sorted(r.at for r in fake.requests if r.status == 200)
        # After the first window's burst, how fast did the rest arrive?
        sustained = (len(arrivals) - rate) / (arrivals[-1] - arrivals[0]) * window / rate
        return {
            "rate": rate, "window_s": window, "requests": len(arrivals), "seconds": round(seconds, 2),
            "sustained_per_window": round(sustained * rate, 2), "sustained_ratio": round(sustained, 3),
            "max_in_any_window": fake.max_in_window(), "responses_429": fake.rejected_429,
        }


async def unlimited(calendar: SessionCalendar, work: Path) -> dict[str, Any]:
    """Provider vs raw aiohttp on the same URLs; then the whole pipeline, all without a quota."""
    symbols = [f"U{i:03d}" for i in range(100)]
    crypto = [Series(f"X:C{i:02d}USD", AssetClass.CRYPTO, Timeframe.M5) for i in range(10)]
    async with FakePolygon(api_key=KEY) as fake:
        await hold_stocks(fake, calendar, symbols, 730)
        demo = DemoProvider(calendar, clock=lambda: AS_OF)
        for s in crypto:
            await fake.hold_from(demo, s, AS_OF - 30 * MS_PER_DAY, AS_OF)
        ranges = [(stock_1d(s), AS_OF - 730 * MS_PER_DAY) for s in symbols]
        ranges += [(s, AS_OF - 30 * MS_PER_DAY) for s in crypto]
        bulkhead = ResilienceSettings().bulkhead_max_concurrent
        provider = PolygonProvider(settings_for(fake, work / "x.db", [], 0, 1).polygon, calendar)
        try:
            urls = [f"{fake.url}/v2/aggs/ticker/{s.symbol}/range/{m}/{span}/{a}/{b}"
                    for s, start in ranges for (m, span) in [s.timeframe.polygon]
                    for a, b in provider.chunks(s, start, AS_OF)]
            floor_s, floor_bars = await _raw_fetch(urls, bulkhead)
            fake.requests.clear()
            began = time.perf_counter()
            got = await asyncio.gather(*(provider.fetch_bars(s, start, AS_OF) for s, start in ranges))
            provider_s = time.perf_counter() - began
        finally:
            await provider.aclose()
        bars = sum(len(b) for b in got)
        if bars != floor_bars or len(fake.requests) != len(urls):
            raise Broken(f"provider got {bars} bars in {len(fake.requests)} requests, "
                         f"raw aiohttp {floor_bars} in {len(urls)}")
        fake.requests.clear()
        settings = settings_for(fake, work / "unlimited.db", symbols, 0, 730)
        began = time.perf_counter()
        report = await service.run(settings, service.RunOptions(as_of=AS_OF))
        pipeline_s = time.perf_counter() - began
        if service.exit_code_of(report) != 0:
            raise Broken(f"the unlimited run failed: {report.error or report.status}")
    return {
        "requests": len(urls), "bars": bars,
        "floor_s": round(floor_s, 3), "provider_s": round(provider_s, 3),
        "ratio": round(provider_s / floor_s, 2),
        "provider_requests_per_s": round(len(urls) / provider_s, 1),
        "provider_bars_per_s": round(bars / provider_s),
        "pipeline_requests": report.requests, "pipeline_bars": report.bars_written,
        "pipeline_s": round(pipeline_s, 2),
        "pipeline_requests_per_s": round(report.requests / pipeline_s, 1),
        "pipeline_bars_per_s": round(report.bars_written / pipeline_s),
    }


async def _raw_fetch(urls: list[str], concurrency: int) -> tuple[float, int]:
    """The floor: GET and json.loads each URL, ``concurrency`` at a time; (seconds, bars)."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {KEY}"}
    params = {"adjusted": "true", "sort": "asc", "limit": "50000"}

    async def one(session: aiohttp.ClientSession, url: str) -> int:
        async with gate, session.get(url, params=params, headers=headers) as response:
            return len(json.loads(await response.read()).get("results", ()))

    async with aiohttp.ClientSession() as session:
        began = time.perf_counter()
        counts = await asyncio.gather(*(one(session, u) for u in urls))
        return time.perf_counter() - began, sum(counts)


async def daily_update(calendar: SessionCalendar, n: int) -> dict[str, Any]:
    """Catch N stock series up on the last UPDATE_DAYS sessions: per series vs grouped daily."""
    symbols = [f"D{i:05d}" for i in range(n)]
    async with FakePolygon(api_key=KEY) as fake:
        await hold_stocks(fake, calendar, symbols, 14)
        settings = settings_for(fake, Path("unused.db"), [], 0, 1)
        provider = PolygonProvider(settings.polygon, calendar)
        try:
            end = calendar.last_complete_bar_start(stock_1d("AAPL"), AS_OF)
            assert end is not None
            days = provider.grouped_days(end - 6 * MS_PER_DAY, end)[-UPDATE_DAYS:]
            start = int(calendar.sessions(end - 6 * MS_PER_DAY, end).day[-UPDATE_DAYS])
            planned_each = sum(provider.requests_needed(stock_1d(s), start, end) for s in symbols)
            began = time.perf_counter()
            each = await asyncio.gather(*(provider.fetch_bars(stock_1d(s), start, end) for s in symbols))
            each_s, each_requests = time.perf_counter() - began, len(fake.requests)
            began = time.perf_counter()
            grouped = [await provider.fetch_grouped_daily(d, symbols=symbols) for d in days]
            grouped_s = time.perf_counter() - began
            grouped_requests = len(fake.requests) - each_requests
        finally:
            await provider.aclose()
    for symbol, bars in zip(symbols, each):
        joined = Bars.concat([g[symbol] for g in grouped if symbol in g])
        if len(joined) != len(bars) or not all(
            np.array_equal(getattr(joined, f), getattr(bars, f), equal_nan=f != "ts") for f in BAR_FIELDS
        ):
            raise Broken(f"grouped daily and custom bars disagree for {symbol}")
    return {
        "symbols": n, "sessions": len(days),
        "per_symbol_requests": each_requests, "per_symbol_planned": planned_each,
        "per_symbol_s": round(each_s, 2),
        "grouped_requests": grouped_requests,
        "grouped_planned": provider.grouped_requests_needed(days),
        "grouped_s": round(grouped_s, 3),
        "free_plan_minutes_per_symbol": round(each_requests / 5, 1),
        "free_plan_minutes_grouped": round(grouped_requests / 5, 1),
    }


def table(figures: dict[str, dict[str, Any]]) -> str:
    q, u, d = figures["quota"], figures["unlimited"], figures["daily_update"]
    quota_ok = q["sustained_ratio"] >= RATE_TARGET and q["responses_429"] == 0
    return "\n".join([
        (f"quota      R = {q['rate']} per {q['window_s']} s window, {q['requests']} requests by the "
         f"pipeline in {q['seconds']} s"),
        (f"           sustained {q['sustained_per_window']} per window = {q['sustained_ratio']} R "
         f"(target >= {RATE_TARGET} R); most in any window {q['max_in_any_window']}; "
         f"429 responses {q['responses_429']}  -> {'ok' if quota_ok else 'OVER TARGET'}"),
        (f"unlimited  provider: {u['requests']} requests, {u['bars']} bars in {u['provider_s']} s = "
         f"{u['provider_requests_per_s']} req/s, {u['provider_bars_per_s']} bars/s"),
        (f"           floor (raw aiohttp + json.loads, same URLs): {u['floor_s']} s; "
         f"provider / floor = {u['ratio']}x"),
        (f"           pipeline (fetch, check, store, indicators): {u['pipeline_requests']} requests, "
         f"{u['pipeline_bars']} bars in {u['pipeline_s']} s = {u['pipeline_requests_per_s']} req/s, "
         f"{u['pipeline_bars_per_s']} bars/s"),
        (f"daily      {d['symbols']} stocks x last {d['sessions']} sessions: one request per symbol "
         f"{d['per_symbol_requests']} ({d['per_symbol_s']} s), grouped daily "
         f"{d['grouped_requests']} ({d['grouped_s']} s)"),
        (f"           at the free plan's 5/min: {d['free_plan_minutes_per_symbol']} min vs "
         f"{d['free_plan_minutes_grouped']} min"),
    ])


async def measure(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    calendar = SessionCalendar()
    with tempfile.TemporaryDirectory(prefix="bench_polygon_") as tmp:
        work = Path(tmp)
        return {
            "quota": await quota(calendar, work, args.rate, args.window, args.windows),
            "unlimited": await unlimited(calendar, work),
            "daily_update": await daily_update(calendar, args.symbols),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10, help="server budget R per window")
    parser.add_argument("--window", type=float, default=1.0, help="the budget's window, seconds")
    parser.add_argument("--windows", type=int, default=6, help="windows the quota run spans")
    parser.add_argument("--symbols", type=int, default=1000, help="stocks in the daily update")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        figures = asyncio.run(measure(args))
    except Broken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(figures, indent=2) if args.json else table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
