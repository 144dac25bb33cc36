"""A run against a provider stricter than configured (issue 10, item 8), printed, never asserted.

The fake Polygon (``tests/integration/fake_polygon.py``) allows ``--real`` requests per rolling
window and answers 429 *without* ``Retry-After`` beyond; enrichctl is configured for
``--configured`` per window. The window is shortened (``--window`` seconds instead of 60) so
the run takes a minute, and every delay of the retry policy and of job retries is scaled by the
same factor, so the run meets the provider as it would with a real minute.

    python bench/bench_strict_quota.py [--real 4] [--configured 20] [--window 2] [--symbols 8]

Figures: requests sent, 429s, jobs failed, the most answered requests in any window, wall time,
and the limiter's own figures at the end (effective rate, refusals).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from fake_polygon import FakePolygon  # noqa: E402

from enrichctl import service  # noqa: E402
from enrichctl.calendar import SessionCalendar, utc_date_ms  # noqa: E402
from enrichctl.domain import MS_PER_DAY, AssetClass, Series, Timeframe  # noqa: E402
from enrichctl.providers.demo import DemoProvider  # noqa: E402
from enrichctl.settings import Settings  # noqa: E402

KEY = "pk_bench_strict_0123456789"
AS_OF = utc_date_ms("2025-06-02") + 12 * 3_600_000  # Monday 08:00 New York
TIMEFRAMES = (Timeframe.D1, Timeframe.H1)
HISTORY_DAYS = {Timeframe.D1: 400, Timeframe.H1: 60}


async def strict_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    scale = args.window / 60.0  # the retry schedule as it would be against a real minute
    symbols = [f"S{i:03d}" for i in range(args.symbols)]
    calendar = SessionCalendar()
    demo = DemoProvider(calendar, clock=lambda: AS_OF)
    async with FakePolygon(api_key=KEY, page_size=args.page_size, budget=args.real,
                           window=args.window, retry_after=False) as fake:
        for symbol in symbols:
            for tf in TIMEFRAMES:
                series = Series(symbol, AssetClass.STOCK, tf)
                await fake.hold_from(demo, series, AS_OF - 500 * MS_PER_DAY, AS_OF)
        settings = Settings(
            provider="polygon",
            polygon={"api_key": KEY, "base_url": fake.url, "requests_per_minute": args.configured,
                     "rate_window_seconds": args.window},
            database_url=f"sqlite:///{work / 'strict.db'}",
            universe=[{"symbol": s} for s in symbols],
            timeframes=TIMEFRAMES,
            history_days=HISTORY_DAYS,
            retry_delay_seconds=2.0 * scale,
            resilience={"retry_initial_delay": 1.0 * scale, "retry_max_delay": 60.0 * scale},
        )
        began = time.perf_counter()
        report = await service.run(settings, service.RunOptions(as_of=AS_OF))
        seconds = time.perf_counter() - began
        with sqlite3.connect(work / "strict.db") as conn:
            stored = conn.execute("SELECT resilience FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        limiter = (json.loads(stored[0] or "{}").get("rate_limiters") or {}).get("polygon", {})
        return {
            "configured_per_window": args.configured, "real_per_window": args.real,
            "window_s": args.window, "jobs": len(symbols), "jobs_failed": report.doc()["jobs_failed"],
            "requests": len(fake.requests), "responses_429": fake.rejected_429,
            "refused_share": round(fake.rejected_429 / max(len(fake.requests), 1), 3),
            "max_answered_in_any_window": fake.max_in_window(),
            "seconds": round(seconds, 1), "exit_code": service.exit_code_of(report),
            "limiter": {k: limiter.get(k) for k in ("effective_rate", "refused", "rate_cuts")},
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=4, help="requests the provider allows per window")
    parser.add_argument("--configured", type=int, default=20, help="requests_per_minute configured")
    parser.add_argument("--window", type=float, default=2.0, help="seconds standing for a minute")
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--page-size", type=int, default=100, help="bars per page of the fake")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("enrichctl").setLevel(logging.ERROR)  # one retry line per 429 otherwise
    with tempfile.TemporaryDirectory(prefix="enrichctl-strict-") as tmp:
        figures = asyncio.run(strict_run(args, Path(tmp)))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
