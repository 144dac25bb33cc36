"""A Polygon-like server for the benchmarks, in its own process: the project's fake Polygon
(``tests/integration/fake_polygon.py``) on 127.0.0.1, answering every request after
``--latency`` seconds, holding the demo provider's day bars of N stocks.

    python bench/_fake_server.py --symbols B0000,B0001 --since 2016-01-01 --until 2025-06-02T12:00

Prints one JSON line ``{"url": ..., "bars": ...}`` once it serves, then serves until its
standard input closes, and then prints ``{"requests": ...}`` (requests by path prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from fake_polygon import FakePolygon, _Held, _row_json  # noqa: E402

from enrichctl.calendar import SessionCalendar  # noqa: E402
from enrichctl.domain import AssetClass, Bars, Series, Timeframe  # noqa: E402
from enrichctl.providers.demo import DemoProvider  # noqa: E402

API_KEY = "pk_bench_0123456789"


def day_start_ms(text: str) -> int:
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(text.removesuffix("Z"))
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


def rows_json(bars: Bars) -> list[str]:
    """What ``FakePolygon.hold`` pre-serialises (the same text), a few times faster: holding
    2,000 series of ten years bar by bar through ``json.dumps`` takes the best part of a minute."""
    cols = [c.tolist() for c in (bars.open, bars.high, bars.low, bars.close, bars.ts,
                                 bars.volume, bars.vwap, bars.trades)]
    out = []
    for o, h, lo, c, t, v, vw, n in zip(*cols):
        extra = "".join(
            part for part, x in ((f',"v":{v!r}', v), (f',"vw":{vw!r}', vw), (f',"n":{int(n) if n == n else 0}', n))
            if not math.isnan(x)
        )
        out.append(f'{{"o":{o!r},"h":{h!r},"l":{lo!r},"c":{c!r},"t":{int(t)}{extra}}}')
    return out


class BenchPolygon(FakePolygon):
    def hold(self, series: Series, bars: Bars) -> None:
        self._held[(series.symbol, series.timeframe)] = _Held(series, bars, rows_json(bars))


async def serve(symbols: list[str], since: str, until: str, latency: float) -> None:
    calendar = SessionCalendar()
    until_ms = day_start_ms(until)
    demo = DemoProvider(calendar, clock=lambda: until_ms)
    fake = BenchPolygon(api_key=API_KEY)
    held = 0
    for symbol in symbols:
        series = Series(symbol, AssetClass.STOCK, Timeframe.D1)
        bars = await fake.hold_from(demo, series, day_start_ms(since), until_ms)
        held += len(bars)
    sample = fake.held(Series(symbols[0], AssetClass.STOCK, Timeframe.D1))
    expected = [_row_json(sample, i, True) for i in range(min(len(sample), 50))]
    if fake._held[(symbols[0], Timeframe.D1)].rows[: len(expected)] != expected:
        sys.exit("bench: the fast serialisation differs from the fake Polygon's own")
    fake.slow = latency
    async with fake:
        print(json.dumps({"url": fake.url, "bars": held, "key": API_KEY}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    counts: dict[str, int] = {}
    for r in fake.requests:
        kind = "grouped" if "/grouped/" in r.path else "aggs"
        counts[kind] = counts.get(kind, 0) + 1
    print(json.dumps({"requests": counts}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", required=True, help="comma-separated tickers")
    parser.add_argument("--since", required=True, help="first day held (YYYY-MM-DD)")
    parser.add_argument("--until", required=True, help="the demo provider's now (ISO instant)")
    parser.add_argument("--latency", type=float, default=0.030, help="seconds per answer")
    args = parser.parse_args()
    asyncio.run(serve(args.symbols.split(","), args.since, args.until, args.latency))


if __name__ == "__main__":
    main()
