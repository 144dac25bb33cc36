"""The pipeline end to end on a real database (SQLite file and PostgreSQL): what is stored after
a run, idempotency, incremental == full, re-adjusted history, retries, the lease and pause.

Every run pins market time with ``RunOptions(as_of=...)``, so the expected bars are those the
demo provider gives for the same range, whatever day the suite runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from enrichctl import service
from enrichctl.calendar import SessionCalendar, days_ago_ms, utc_date_ms
from enrichctl.domain import (
    BAR_FIELDS,
    MS_PER_DAY,
    AssetClass,
    Bars,
    RunStatus,
    Series,
    Timeframe,
)
from enrichctl.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    PermanentProviderError,
    ProviderAuthError,
    ProviderError,
    RetryableProviderError,
)
from enrichctl.pipeline.plan import Mode
from enrichctl.providers.base import RequestSink
from enrichctl.providers.demo import DemoProvider
from enrichctl.service import RunOptions
from enrichctl.verify import VerifyOptions, verify

HOUR_MS = 3_600_000
# Friday 2024-06-14, 22:00 UTC: after the New York close, before the day bar is complete.
AS_OF = utc_date_ms("2024-06-14") + 22 * HOUR_MS

AAPL_1D = Series("AAPL", AssetClass.STOCK, Timeframe.D1)


def series_of(symbol: str, timeframe: Timeframe) -> Series:
    return Series(symbol, AssetClass.for_symbol(symbol), timeframe)


async def demo_bars(calendar: SessionCalendar, series: Series, start: int, end: int, as_of: int) -> Bars:
    """What the demo provider returns for a range at market time ``as_of``."""
    return await DemoProvider(calendar, clock=lambda: as_of).fetch_bars(series, start, end)


def bars_equal(a: Bars, b: Bars) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(getattr(a, n), getattr(b, n), equal_nan=n != "ts")
        for n in BAR_FIELDS
    )


# --- fake providers ---------------------------------------------------------------------------


class SplitProvider:
    """The demo provider's bars; once the 4:1 split at ``split_ts`` is announced, every earlier
    bar comes re-adjusted (prices / 4, volume * 4), as Polygon's ``adjusted=true`` does."""

    name = "demo"
    synthetic = True
    supports_grouped_daily = False
    supports_reference = False
    FACTOR = 4.0

    def __init__(self, demo: DemoProvider, split_ts: int, announced: bool) -> None:
        self.demo = demo
        self.split_ts = split_ts
        self.announced = announced

    def requests_needed(self, series: Series, start_ms: int, end_ms: int) -> int:
        return self.demo.requests_needed(series, start_ms, end_ms)

    async def fetch_bars(self, series: Series, start_ms: int, end_ms: int) -> Bars:
        bars = await self.demo.fetch_bars(series, start_ms, end_ms)
        if not self.announced:
            return bars
        factor = np.where(bars.ts < self.split_ts, self.FACTOR, 1.0)
        return Bars(bars.ts, bars.open / factor, bars.high / factor, bars.low / factor,
                    bars.close / factor, bars.volume * factor, bars.vwap / factor, bars.trades)

    async def aclose(self) -> None:
        await self.demo.aclose()


class FailingProvider:
    """The demo provider, except that the first ``times`` calls for a symbol raise ``error``
    (``times=math.inf``: every call). ``calls`` counts the calls per symbol."""

    name = "demo"
    synthetic = True
    supports_grouped_daily = False
    supports_reference = False

    def __init__(self, demo: DemoProvider, failures: dict[str, tuple[ProviderError, float]]) -> None:
        self.demo = demo
        self.failures = failures
        self.calls: dict[str, int] = {}

    def requests_needed(self, series: Series, start_ms: int, end_ms: int) -> int:
        return self.demo.requests_needed(series, start_ms, end_ms)

    async def fetch_bars(self, series: Series, start_ms: int, end_ms: int) -> Bars:
        n = self.calls[series.symbol] = self.calls.get(series.symbol, 0) + 1
        error, times = self.failures.get(series.symbol, (None, 0))
        if error is not None and n <= times:
            raise error
        return await self.demo.fetch_bars(series, start_ms, end_ms)

    async def aclose(self) -> None:
        await self.demo.aclose()


def split_provider(split_ts: int, announced: bool) -> Callable:
    def make(calendar: SessionCalendar, sink: RequestSink, clock: Callable[[], int]) -> SplitProvider:
        return SplitProvider(DemoProvider(calendar, sink=sink, clock=clock), split_ts, announced)

    return make


def failing_provider(failures: dict[str, tuple[ProviderError, float]]) -> Callable:
    def make(calendar: SessionCalendar, sink: RequestSink, clock: Callable[[], int]) -> FailingProvider:
        return FailingProvider(DemoProvider(calendar, sink=sink, clock=clock), failures)

    return make


# --- a full run -------------------------------------------------------------------------------

MIXED = ["AAPL", "X:BTCUSD", "I:SPX"]  # a stock, a crypto pair, an index without volume


async def test_a_run_stores_exactly_the_providers_bars_with_indicators_and_bookkeeping(db, calendar):
    settings = db.settings(MIXED, timeframes=("1d", "1h"))
    report = await service.run(settings, RunOptions(as_of=AS_OF))

    assert report.status == RunStatus.SUCCEEDED.value, report.error
    assert service.exit_code_of(report) == EXIT_OK
    assert report.plan is not None and len(report.plan.tasks) == 6
    total = 0
    for task in report.plan.tasks:
        series = task.series
        assert task.mode is Mode.NEW
        assert task.start == days_ago_ms(AS_OF, settings.history_days[series.timeframe])
        expected = await demo_bars(calendar, series, task.start, task.end, AS_OF)
        stored = db.bars(series)
        assert len(expected) > 0
        assert bars_equal(stored, expected), f"{series}: stored bars differ from the provider's"
        total += len(stored)

        row = db.dicts("SELECT * FROM series WHERE symbol = :s AND timeframe = :t",
                       s=series.symbol, t=series.timeframe.value)[0]
        assert row["watermark"] == int(stored.ts[-1])
        assert row["first_ts"] == int(stored.ts[0])
        assert row["bar_count"] == len(stored)
        assert row["quality_score"] == 1.0, f"{series}: quality {row['quality_score']}"
        assert row["synthetic"] and row["provider"] == "demo"
        ind_ts, _ = db.indicators(series)
        assert np.array_equal(ind_ts, stored.ts), f"{series}: one indicator row per bar"
        if series.symbol == "I:SPX":
            assert np.isnan(stored.volume).all()  # an index has no volume, stored as NULL

    assert db.scalar("SELECT count(*) FROM bars") == total
    assert db.rows("SELECT symbol, timeframe, ts FROM bars GROUP BY symbol, timeframe, ts "
                   "HAVING count(*) > 1") == []
    assert db.rows("SELECT kind, detail FROM quality_issues") == []
    verified = await verify(settings, None, VerifyOptions(recompute=True))
    assert verified["ok"], [s for s in verified["series"] if not s["ok"]]
    assert report.bars_written == report.bars_fetched == total

    run = db.dicts("SELECT * FROM runs")
    assert len(run) == 1
    run = run[0]
    assert run["id"] == report.run_id
    assert run["status"] == "succeeded" and run["trigger"] == "cli" and run["error"] is None
    assert run["finished_at"] >= run["started_at"]
    assert (run["jobs_total"], run["jobs_succeeded"], run["jobs_failed"]) == (3, 3, 0)
    assert run["bars_written"] == total

    jobs = db.dicts("SELECT * FROM jobs ORDER BY symbol")
    assert [j["symbol"] for j in jobs] == sorted(MIXED)
    for job in jobs:
        assert job["run_id"] == report.run_id
        assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 1, None)
        assert job["started_at"] is not None and job["finished_at"] >= job["started_at"]
        assert job["duration_ms"] is not None and job["duration_ms"] >= 0

    tasks = db.dicts("SELECT * FROM tasks ORDER BY symbol, timeframe")
    assert len(tasks) == 6
    for task in tasks:
        assert task["status"] == "succeeded" and task["attempt"] == 1
        assert task["fetch_ms"] is not None and task["compute_ms"] is not None
        assert task["finished_at"] >= task["started_at"]
        assert task["bars_written"] == db.scalar(
            "SELECT count(*) FROM bars WHERE symbol = :s AND timeframe = :t",
            s=task["symbol"], t=task["timeframe"])
        assert task["indicator_values"] > 0

    requests = db.dicts("SELECT * FROM requests")
    assert {(r["symbol"], r["timeframe"]) for r in requests} == {
        (t.series.symbol, t.series.timeframe.value) for t in report.plan.tasks}
    assert all(r["ok"] and r["run_id"] == report.run_id and r["provider"] == "demo" for r in requests)
    assert sum(r["bars"] for r in requests) == total
    assert run["requests"] == report.requests == len(requests)


async def test_a_second_run_at_the_same_time_writes_nothing(db):
    settings = db.settings(MIXED, timeframes=("1d", "1h"))
    first = await service.run(settings, RunOptions(as_of=AS_OF))
    assert first.status == "succeeded" and first.bars_written > 0
    before = {
        "bars": db.table("bars", "symbol, timeframe, ts"),
        "indicators": db.table("indicators", "symbol, timeframe, ts"),
        "series": db.table("series", "symbol, timeframe"),
    }
    requests_before = db.scalar("SELECT count(*) FROM requests")

    second = await service.run(settings, RunOptions(as_of=AS_OF))

    assert second.status == "succeeded"
    assert (second.bars_fetched, second.bars_written, second.requests) == (0, 0, 0)
    assert second.plan is not None
    assert all(t.mode is Mode.UP_TO_DATE for t in second.plan.tasks)
    assert db.table("bars", "symbol, timeframe, ts") == before["bars"]
    assert db.table("indicators", "symbol, timeframe, ts") == before["indicators"]
    assert db.table("series", "symbol, timeframe") == before["series"]
    assert db.scalar("SELECT count(*) FROM requests") == requests_before
    run = db.dicts("SELECT * FROM runs WHERE id = :i", i=second.run_id)[0]
    assert (run["status"], run["bars_written"], run["requests"]) == ("succeeded", 0, 0)


# --- incremental == full --------------------------------------------------------------------


# (timeframe, history days, step, steps on SQLite, steps on PostgreSQL): the long loop runs on
# SQLite only, to keep the suite fast; PostgreSQL walks the same path for a few steps.
WALKS = {
    "1d-daily": (Timeframe.D1, 1100, MS_PER_DAY, 60, 8),
    "1h-every-5h": (Timeframe.H1, 60, 5 * HOUR_MS, 30, 6),
}


@pytest.mark.parametrize("walk", list(WALKS))
async def test_step_by_step_runs_equal_one_full_run(db, other_db, walk):
    """Years (or months) of history, then one run per step: every indicator equals TA-Lib over
    the whole stored series, and bars and indicators equal one fresh run up to the last step."""
    timeframe, days, step, steps_sqlite, steps_postgres = WALKS[walk]
    steps = steps_sqlite if db.backend == "sqlite" else steps_postgres
    settings = db.settings(["AAPL", "X:BTCUSD"], timeframes=(timeframe.value,),
                           history_days={timeframe.value: days})
    first = AS_OF - steps * step
    written = 0
    for n in range(steps + 1):
        report = await service.run(settings, RunOptions(as_of=first + n * step))
        assert report.status == "succeeded", f"step {n}: {report.error}"
        written += report.bars_written
        if n > 0:
            assert all(t.mode in (Mode.INCREMENTAL, Mode.UP_TO_DATE) for t in report.plan.tasks)

    every = [series_of(s, timeframe) for s in ("AAPL", "X:BTCUSD")]
    for series in every:
        db.assert_indicators_are_full_compute(settings, series)
    assert written == db.scalar("SELECT count(*) FROM bars")
    assert db.rows("SELECT kind, detail FROM quality_issues") == []

    fresh = other_db.settings(["AAPL", "X:BTCUSD"], timeframes=(timeframe.value,),
                              history_days={timeframe.value: days})
    since = days_ago_ms(first, days)  # where the step-by-step database began
    report = await service.run(fresh, RunOptions(as_of=AS_OF, since=since))
    assert report.status == "succeeded"
    for series in every:
        db.assert_same_series(other_db, series)
    summary = "SELECT symbol, timeframe, watermark, first_ts, bar_count FROM series ORDER BY symbol"
    assert db.rows(summary) == other_db.rows(summary)


async def test_a_second_run_with_the_same_since_writes_nothing(db):
    settings = db.settings(["AAPL", "X:BTCUSD"])
    options = RunOptions(as_of=AS_OF, since=utc_date_ms("2024-01-01"))
    first = await service.run(settings, options)
    assert first.status == "succeeded" and first.bars_written > 0

    second = await service.run(settings, options)

    assert [t.mode for t in second.plan.tasks] == [Mode.UP_TO_DATE, Mode.UP_TO_DATE]
    assert (second.bars_written, second.requests) == (0, 0)


# --- re-adjusted history ----------------------------------------------------------------------


async def test_a_split_announced_after_a_run_replaces_the_whole_series(db, calendar, run_with_provider):
    settings = db.settings(["AAPL"])
    split_ts = utc_date_ms("2024-06-17") + 4 * HOUR_MS  # Monday, midnight New York
    first = await run_with_provider(settings, RunOptions(as_of=AS_OF), split_provider(split_ts, False))
    assert first.status == "succeeded"
    watermark = db.scalar("SELECT watermark FROM series")
    assert watermark < split_ts

    later = AS_OF + 4 * MS_PER_DAY  # Tuesday evening: Monday's bar is complete
    second = await run_with_provider(settings, RunOptions(as_of=later), split_provider(split_ts, True))

    assert second.status == "succeeded", second.error
    assert second.jobs[0].readjusted == 1
    task = second.plan.tasks[0]
    assert task.mode is Mode.INCREMENTAL
    stored = db.bars(AAPL_1D)
    announced = SplitProvider(DemoProvider(calendar, clock=lambda: later), split_ts, True)
    expected = await announced.fetch_bars(AAPL_1D, int(stored.ts[0]), task.end)
    assert bars_equal(stored, expected), "the stored history is not the re-adjusted one"
    assert stored.ts[0] < watermark < split_ts <= stored.ts[-1]
    row = db.dicts("SELECT * FROM series")[0]
    assert (row["watermark"], row["bar_count"]) == (int(stored.ts[-1]), len(stored))

    db.assert_indicators_are_full_compute(settings, AAPL_1D)
    verified = await verify(settings, "AAPL", VerifyOptions(recompute=True))
    assert verified["series"][0]["max_indicator_diff"] <= 1e-9
    issues = db.dicts("SELECT * FROM quality_issues WHERE kind = 'readjusted'")
    assert len(issues) == 1
    assert issues[0]["symbol"] == "AAPL" and issues[0]["run_id"] == second.run_id
    assert "re-adjusted" in issues[0]["detail"]


async def test_a_split_keeps_all_of_the_stored_history(db, run_with_provider):
    settings = db.settings(["AAPL"])
    split_ts = utc_date_ms("2024-09-16") + 4 * HOUR_MS
    first = await run_with_provider(settings, RunOptions(as_of=AS_OF), split_provider(split_ts, False))
    first_ts, count = db.rows("SELECT first_ts, bar_count FROM series")[0]
    later = AS_OF + 100 * MS_PER_DAY  # after the split: the stored history is 100 days older

    second = await run_with_provider(settings, RunOptions(as_of=later), split_provider(split_ts, True))

    assert first.status == second.status == "succeeded" and second.jobs[0].readjusted == 1
    assert db.rows("SELECT first_ts FROM series") == [(first_ts,)]
    assert db.scalar("SELECT count(*) FROM bars") > count


# --- retries --------------------------------------------------------------------------------

THREE = ["AAPL", "MSFT", "NVDA"]


async def test_a_job_failing_twice_then_succeeding_is_retried(db, run_with_provider):
    settings = db.settings(THREE, history_days={"1d": 30})
    failures = {"MSFT": (RetryableProviderError("HTTP 503 from the provider", status=503), 2)}
    report = await run_with_provider(settings, RunOptions(as_of=AS_OF), failing_provider(failures))

    assert report.status == "succeeded" and service.exit_code_of(report) == EXIT_OK
    jobs = {j["symbol"]: j for j in db.dicts("SELECT * FROM jobs")}
    assert (jobs["MSFT"]["status"], jobs["MSFT"]["attempts"], jobs["MSFT"]["error"]) == ("succeeded", 3, None)
    assert (jobs["AAPL"]["status"], jobs["AAPL"]["attempts"]) == ("succeeded", 1)
    attempts = db.rows("SELECT attempt, status FROM tasks WHERE symbol = 'MSFT' ORDER BY attempt")
    assert attempts == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert db.scalar("SELECT count(*) FROM bars WHERE symbol = 'MSFT'") > 0


async def test_a_job_that_always_fails_ends_failed_and_the_run_partial(db, run_with_provider):
    settings = db.settings(THREE, history_days={"1d": 30}, max_retries=2)
    failures = {"MSFT": (RetryableProviderError("HTTP 502 bad gateway", status=502), math.inf)}
    report = await run_with_provider(settings, RunOptions(as_of=AS_OF), failing_provider(failures))

    assert report.status == RunStatus.PARTIAL.value
    assert service.exit_code_of(report) == EXIT_FAILED
    jobs = {j["symbol"]: j for j in db.dicts("SELECT * FROM jobs")}
    assert (jobs["MSFT"]["status"], jobs["MSFT"]["attempts"]) == ("failed", 3)
    assert "HTTP 502 bad gateway" in jobs["MSFT"]["error"]
    assert [jobs[s]["status"] for s in ("AAPL", "NVDA")] == ["succeeded", "succeeded"]
    run = db.dicts("SELECT * FROM runs")[0]
    assert (run["status"], run["jobs_succeeded"], run["jobs_failed"]) == ("partial", 2, 1)
    series = db.dicts("SELECT * FROM series WHERE symbol = 'MSFT'")
    assert series and "HTTP 502 bad gateway" in series[0]["last_error"] and series[0]["watermark"] is None
    assert db.scalar("SELECT count(*) FROM bars WHERE symbol = 'MSFT'") == 0
    assert db.scalar("SELECT count(*) FROM bars WHERE symbol = 'AAPL'") > 0


async def test_a_permanent_provider_error_is_not_retried(db, run_with_provider):
    settings = db.settings(THREE, history_days={"1d": 30})
    failures = {"NVDA": (PermanentProviderError("HTTP 404: unknown ticker", status=404), math.inf)}
    report = await run_with_provider(settings, RunOptions(as_of=AS_OF), failing_provider(failures))

    assert report.status == "partial"
    nvda = db.dicts("SELECT * FROM jobs WHERE symbol = 'NVDA'")[0]
    assert (nvda["status"], nvda["attempts"]) == ("failed", 1)
    assert "unknown ticker" in nvda["error"]
    assert db.scalar("SELECT count(*) FROM tasks WHERE symbol = 'NVDA'") == 1


async def test_a_refused_key_aborts_the_run_with_exit_78(db, run_with_provider):
    settings = db.settings(THREE, history_days={"1d": 30})
    refused = ProviderAuthError("the provider refused the API key (HTTP 401)")
    report = await run_with_provider(
        settings, RunOptions(as_of=AS_OF), failing_provider({s: (refused, math.inf) for s in THREE})
    )

    assert report.aborted and report.bars_fetched == 0
    assert service.exit_code_of(report) == EXIT_CONFIG
    assert "refused the API key" in report.error
    jobs = db.dicts("SELECT * FROM jobs")
    assert all(j["status"] == "failed" and j["attempts"] <= 1 for j in jobs)
    run = db.dicts("SELECT * FROM runs")[0]
    assert run["status"] == "failed" and "refused the API key" in run["error"]
    assert db.scalar("SELECT count(*) FROM bars") == 0
