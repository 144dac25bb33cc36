"""PostgreSQL connections dropped in the middle of a run (a server restart, a failover, an admin's
``pg_terminate_backend``): the run still ends on its own, every job done or failed with a database
error, nothing half-written, the run closed and its lease released; the next run completes it.

A second client (psycopg2, in a thread) does the dropping. To hit one phase of the run every time
rather than by luck, it holds a lock that the run's statements of that phase must wait for, and
terminates the connections that wait: each is dropped in the middle of its statement.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from enrichctl import service
from enrichctl.calendar import utc_date_ms
from enrichctl.domain import AssetClass, RunStatus, Series, Timeframe
from enrichctl.errors import StoreError
from enrichctl.service import RunOptions, RunReport
from enrichctl.settings import Settings

pytestmark = pytest.mark.postgres

# Friday 2024-06-14, 22:00 UTC, as in test_pipeline: the demo provider's bars are fixed by it.
AS_OF = utc_date_ms("2024-06-14") + 22 * 3_600_000
SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "JPM", "X:BTCUSD"]
TIMEFRAMES = ("1d", "1h")
SABOTAGE_TIMEOUT_S = 30
UNFINISHED = "('pending', 'running', 'retrying')"

JOB_AT_WORK = "SELECT id FROM jobs WHERE status = 'running' AND attempts >= 1 LIMIT 1"
# Terminates every connection waiting for a lock (but ours); says whether one ran ``pattern``.
TERMINATE_WAITING = """
WITH waiting AS (
    SELECT pid, query FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'
      AND pid NOT IN (pg_backend_pid(), :holder)
)
SELECT count(pg_terminate_backend(pid)), coalesce(bool_or(query ILIKE :pattern), false) FROM waiting
"""


class SabotageFailed(Exception):
    """The saboteur could not do its part: the test is broken, nothing was found out."""


class Saboteur:
    """Drops the run's connections from connections of its own, in a thread."""

    def __init__(self, sync_url: str) -> None:
        self.engine = sa.create_engine(sync_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.terminated = 0
        self.stop = threading.Event()

    def drop_waiting(self, ready: str, lock: str, patterns: Sequence[str]) -> None:
        """Once ``ready`` returns a row, take ``lock`` (its parameters from that row) in a
        transaction. Then, for each pattern in turn, terminate every connection that waits for
        the lock until one of them was running a statement like the pattern. Then let go."""
        deadline = time.monotonic() + SABOTAGE_TIMEOUT_S
        with self.engine.connect() as poller, self.engine.connect() as holder:
            while (row := poller.execute(sa.text(ready)).first()) is None:
                self._wait(deadline, f"nothing returned by {ready}")
            holder_pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            holder.exec_driver_sql("BEGIN")
            try:
                holder.execute(sa.text(lock), dict(row._mapping))
                for pattern in patterns:
                    while True:
                        killed, matched = poller.execute(
                            sa.text(TERMINATE_WAITING), {"holder": holder_pid, "pattern": pattern}
                        ).one()
                        self.terminated += killed
                        if matched:
                            break
                        self._wait(deadline, f"no statement like {pattern!r} waited for {lock!r}")
            finally:
                holder.exec_driver_sql("COMMIT")

    def _wait(self, deadline: float, what: str) -> None:
        if self.stop.is_set() or time.monotonic() > deadline:
            raise SabotageFailed(what)
        time.sleep(0.002)

    def close(self) -> None:
        self.engine.dispose()


async def _run_sabotaged(
    settings: Settings, saboteur: Saboteur, ready: str, lock: str, patterns: Sequence[str]
) -> RunReport:
    """``service.run`` with ``saboteur.drop_waiting(ready, lock, patterns)`` beside it; a failed
    sabotage is reported as such."""
    attack = asyncio.create_task(asyncio.to_thread(saboteur.drop_waiting, ready, lock, patterns))
    try:
        return await asyncio.wait_for(service.run(settings, RunOptions(as_of=AS_OF)), SABOTAGE_TIMEOUT_S)
    finally:
        saboteur.stop.set()
        try:
            await attack
        finally:
            saboteur.close()


def _settings(db) -> Settings:
    return db.settings(SYMBOLS, timeframes=TIMEFRAMES, max_concurrent_symbols=4)


async def _existing_database(db) -> Settings:
    """Settings on ``db`` with its schema in place, as on every run after the first."""
    settings = _settings(db)
    async with service.store_open(settings):
        pass
    return settings


def _series() -> list[Series]:
    return [Series(s, AssetClass.for_symbol(s), Timeframe(t)) for s in SYMBOLS for t in TIMEFRAMES]


async def test_connections_dropped_while_writing_bars_are_retried_and_lose_nothing(
    postgres_server, caplog: pytest.LogCaptureFixture
) -> None:
    db, undisturbed_db = postgres_server.database("dropped_bars"), postgres_server.database("dropped_clean")
    settings = await _existing_database(db)
    saboteur = Saboteur(db.sync_url)
    # Twice: the first writers dropped, then their retries (or others) dropped again.
    report = await _run_sabotaged(
        settings, saboteur, JOB_AT_WORK, "LOCK TABLE bars IN SHARE MODE", ["%bars%", "%bars%"])

    assert saboteur.terminated >= 2
    assert report.status == RunStatus.SUCCEEDED.value, [(j.symbol, j.error) for j in report.jobs]
    assert max(j.attempts for j in report.jobs) >= 2, "no job was retried"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    _assert_closed_and_consistent(db, RunStatus.SUCCEEDED.value)

    # The next run has nothing to do; the data is that of a run never disturbed.
    again, undisturbed = await asyncio.gather(
        service.run(settings, RunOptions(as_of=AS_OF)),
        service.run(_settings(undisturbed_db), RunOptions(as_of=AS_OF)),
    )
    assert again.status == undisturbed.status == RunStatus.SUCCEEDED.value
    assert again.bars_written == 0
    for series in _series():
        db.assert_same_series(undisturbed_db, series)


async def test_jobs_whose_bookkeeping_is_dropped_are_given_back_and_done(postgres_server) -> None:
    db = postgres_server.database("dropped_jobs")
    settings = await _existing_database(db)
    saboteur = Saboteur(db.sync_url)
    # Drop the job updates in flight twice (a job's own bookkeeping among them), then let go:
    # the jobs whose bookkeeping was lost are orphans of this worker, given back and redone.
    report = await _run_sabotaged(
        settings, saboteur, JOB_AT_WORK, "LOCK TABLE jobs IN SHARE MODE",
        ["UPDATE jobs%", "UPDATE jobs%"])

    not_done = [(j.symbol, j.status.value) for j in report.jobs if j.status.value != "succeeded"]
    assert report.status == RunStatus.SUCCEEDED.value, f"run {report.status}; jobs not done: {not_done}"
    _assert_closed_and_consistent(db, RunStatus.SUCCEEDED.value)


async def test_a_connection_dropped_while_the_run_closes_still_closes_it(postgres_server) -> None:
    db = postgres_server.database("dropped_close")
    settings = await _existing_database(db)
    saboteur = Saboteur(db.sync_url)
    # The run row is locked from the start; only the run's final UPDATE waits for it.
    report = await _run_sabotaged(
        settings, saboteur, "SELECT id FROM runs WHERE status = 'running'",
        "SELECT id FROM runs WHERE id = :id FOR NO KEY UPDATE", ["UPDATE runs%"])

    assert report.status == RunStatus.SUCCEEDED.value
    _assert_closed_and_consistent(db, RunStatus.SUCCEEDED.value)


async def test_a_connection_dropped_while_planning_fails_the_run_cleanly_or_is_retried(postgres_server) -> None:
    db = postgres_server.database("dropped_plan")
    settings = await _existing_database(db)
    saboteur = Saboteur(db.sync_url)
    # Planning reads the watermarks first: the series table, locked, makes it wait.
    try:
        report = await _run_sabotaged(
            settings, saboteur, "SELECT 1", "LOCK TABLE series IN ACCESS EXCLUSIVE MODE", ["%FROM series%"])
    except StoreError as exc:
        # Failing before the run is recorded is clean: one message, nothing to clean up.
        assert "database" in exc.message
        assert db.rows("SELECT count(*) FROM runs") == [(0,)]
        assert db.rows("SELECT count(*) FROM leases") == [(0,)]
    else:
        assert report.status == RunStatus.SUCCEEDED.value
        _assert_closed_and_consistent(db, RunStatus.SUCCEEDED.value)
    assert saboteur.terminated >= 1

    again = await service.run(settings, RunOptions(as_of=AS_OF))
    assert again.status == RunStatus.SUCCEEDED.value
    _assert_closed_and_consistent(db, RunStatus.SUCCEEDED.value)


def _assert_closed_and_consistent(db, last_status: str) -> None:
    """The last run is closed as ``last_status`` with its lease released and no job left open;
    every series row tells the truth about its bars, and every bar has its indicator row."""
    assert db.rows("SELECT status FROM runs ORDER BY id DESC LIMIT 1") == [(last_status,)]
    assert db.rows("SELECT status FROM runs WHERE status = 'running'") == [], "a run was left running"
    assert db.rows("SELECT run_id FROM leases") == [], "the run lease was not released"
    assert db.rows(f"SELECT symbol, status FROM jobs WHERE status IN {UNFINISHED}") == []
    series = db.rows(
        "SELECT s.symbol, s.timeframe, s.watermark, s.bar_count, "
        "(SELECT max(ts) FROM bars b WHERE b.symbol = s.symbol AND b.timeframe = s.timeframe), "
        "(SELECT count(*) FROM bars b WHERE b.symbol = s.symbol AND b.timeframe = s.timeframe) "
        "FROM series s"
    )
    untrue = [r for r in series if (r[2], r[3]) != (r[4], r[5])]
    assert untrue == [], f"(symbol, timeframe, watermark, bar_count, max ts, bars): {untrue}"
    unmatched = db.rows(
        "SELECT symbol, timeframe, count(b.ts), count(i.ts) FROM bars b "
        "FULL JOIN indicators i USING (symbol, timeframe, ts) "
        "GROUP BY symbol, timeframe HAVING count(b.ts) <> count(i.ts)"
    )
    assert unmatched == [], f"(symbol, timeframe, bars, indicator rows): {unmatched}"
