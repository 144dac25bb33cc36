"""The store on a real database (SQLite file and PostgreSQL): migrations, indicator columns that
follow the configuration, the schema's rules, database URLs, and the control it holds: the run
lease and the pause flag."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from enrichctl import service
from enrichctl.calendar import utc_date_ms
from enrichctl.domain import (
    MS_PER_DAY,
    AssetClass,
    Instrument,
    RunStatus,
    Series,
    Timeframe,
    Trigger,
    now_ms,
)
from enrichctl.errors import (
    EXIT_OK,
    EXIT_TEMPFAIL,
    ConfigError,
    RunActive,
    StoreError,
    TemporaryError,
)
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.service import RunOptions
from enrichctl.store import migrate
from enrichctl.store.repo import Store, normalise_url

AS_OF = utc_date_ms("2024-06-14") + 22 * 3_600_000  # Friday evening, after the New York close
TABLES = {"runs", "jobs", "tasks", "bars", "indicators", "series", "quality_issues", "requests",
          "control", "leases"}
SYMBOLS = ["AAPL", "X:BTCUSD"]


def columns_of(db, table: str) -> list[str]:
    return [c["name"] for c in sa.inspect(db.engine).get_columns(table)]


async def test_migrations_bring_a_new_database_to_head_and_upgrade_is_idempotent(db):
    settings = db.settings(SYMBOLS)
    head = migrate.head_revision()

    first = await service.db_upgrade(settings)

    assert first == {"revision": head, "head": head}
    assert db.rows("SELECT version_num FROM alembic_version") == [(head,)]
    assert TABLES <= set(sa.inspect(db.engine).get_table_names())
    assert set(IndicatorSet(settings.indicators).columns) <= set(columns_of(db, "indicators"))

    report = await service.run(settings, RunOptions(as_of=AS_OF))
    assert report.status == "succeeded"
    schema = {t: columns_of(db, t) for t in TABLES}
    bars = db.table("bars", "symbol, timeframe, ts")

    assert await service.db_upgrade(settings) == first
    assert db.rows("SELECT version_num FROM alembic_version") == [(head,)]
    assert {t: columns_of(db, t) for t in TABLES} == schema
    assert db.table("bars", "symbol, timeframe, ts") == bars


@pytest.mark.parametrize("days_later", [0, 3], ids=["no-new-bars", "with-new-bars"])
async def test_a_new_indicator_adds_a_column_and_covers_the_whole_series(db, days_later):
    base = db.settings(SYMBOLS)
    assert (await service.run(base, RunOptions(as_of=AS_OF))).status == "succeeded"
    assert "ema_50" not in columns_of(db, "indicators")

    extended = db.settings(SYMBOLS, indicators=(*base.indicators, "ema_50"))
    report = await service.run(extended, RunOptions(as_of=AS_OF + days_later * MS_PER_DAY))

    assert report.status == "succeeded", report.error
    assert "ema_50" in columns_of(db, "indicators")
    assert all(t.recompute_indicators for t in report.plan.tasks)
    fingerprint = IndicatorSet(extended.indicators).fingerprint
    assert db.rows("SELECT DISTINCT indicator_set FROM series") == [(fingerprint,)]
    for symbol in SYMBOLS:
        series = Series(symbol, AssetClass.for_symbol(symbol), Timeframe.D1)
        db.assert_indicators_are_full_compute(extended, series)
        assert db.scalar("SELECT count(*) FROM indicators WHERE symbol = :s AND ema_50 IS NULL",
                         s=symbol) == 49  # only TA-Lib's lookback, nothing left unfilled

    again = await service.run(extended, RunOptions(as_of=AS_OF + days_later * MS_PER_DAY))
    assert not any(t.recompute_indicators for t in again.plan.tasks)
    assert again.bars_written == 0


async def test_the_schema_allows_only_one_running_run(db):
    store = await Store.open(db.url)
    try:
        values = dict(trigger="cli", provider="demo", synthetic=True, host="h", pid=1,
                      started_at=now_ms(), options="{}")
        first = await store.run_create(status="running", **values)
        with pytest.raises(StoreError):
            await store.run_create(status="running", **values)
        await store.run_create(status="succeeded", **values)
        await store.run_create(status="succeeded", **values)
        await store.run_update(first, status="succeeded", finished_at=now_ms())
        await store.run_create(status="running", **values)
    finally:
        await store.close()
    assert db.rows("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status") == [
        ("running", 1), ("succeeded", 3)]


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgresql://user@host/db", "postgresql+asyncpg://user@host/db"),
        ("postgres://user:secret@host:5433/db", "postgresql+asyncpg://user:secret@host:5433/db"),
        ("postgresql+asyncpg://user@host/db", "postgresql+asyncpg://user@host/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:////var/lib/enrichctl/enrichctl.db", "sqlite+aiosqlite:////var/lib/enrichctl/enrichctl.db"),
    ],
)
def test_plain_database_urls_are_given_their_async_driver(given, expected):
    assert normalise_url(given) == expected


@pytest.mark.parametrize("url", ["mysql://user@host/db", "not a url"])
def test_an_unsupported_database_url_is_a_configuration_error(url):
    with pytest.raises(ConfigError) as caught:
        normalise_url(url)
    assert caught.value.exit_code == 78


async def test_an_unreachable_postgresql_is_temporary_and_a_missing_database_is_configuration(
    postgres_server,
):
    # Nobody answers: it may come back (exit 75). The server answers "no such database": a
    # person must fix the URL (exit 78).
    with pytest.raises(TemporaryError, match="cannot open the database") as unreachable:
        await Store.open("postgresql://nobody@127.0.0.1:1/nothing")
    assert unreachable.value.exit_code == 75 and not isinstance(unreachable.value, ConfigError)
    missing = postgres_server.admin_url.set(drivername="postgresql", database="enrichctl_no_such_db")
    with pytest.raises(ConfigError, match="does not exist"):
        await Store.open(missing.render_as_string(hide_password=False))


async def test_an_sqlite_path_that_cannot_be_created_is_a_configuration_error(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create the database directory"):
        await Store.open(f"sqlite:///{blocker / 'sub' / 'enrichctl.db'}")
    assert blocker.read_text() == "not a directory"


def test_an_sqlite_file_that_cannot_be_opened_leaves_no_thread_reporting_to_a_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiosqlite's worker thread of a failed open reported to the command's event loop after it
    had closed: a traceback on stderr under the one error line."""
    (tmp_path / "a-directory.db").mkdir()
    stray: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: stray.append(args.exc_value))
    for _ in range(20):  # one command each: its own loop, closed at the end
        with pytest.raises(ConfigError, match="unable to open database file"):
            asyncio.run(Store.open(f"sqlite:///{tmp_path / 'a-directory.db'}"))
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(5)
    assert stray == []


# --- lease and pause --------------------------------------------------------------------------


async def test_a_run_while_another_holds_the_lease_exits_75(db):
    if db.backend == "postgresql":
        pytest.skip("on PostgreSQL a second run joins the active one: test_a_second_run_joins_on_postgresql")
    settings = db.settings(["AAPL"])
    store = await Store.open(settings.database_url_resolved())
    try:
        await store.lease_claim(424242, "other-host", 4242, ttl_ms=60_000)
    finally:
        await store.close()

    with pytest.raises(RunActive) as caught:
        await service.run(settings, RunOptions(as_of=AS_OF))

    assert caught.value.exit_code == EXIT_TEMPFAIL
    assert "424242" in caught.value.message and "other-host" in caught.value.message
    assert db.scalar("SELECT count(*) FROM runs") == 0
    assert db.scalar("SELECT count(*) FROM bars") == 0
    assert db.rows("SELECT run_id, host FROM leases") == [(424242, "other-host")]


async def running_run(store: Store, host: str = "h", pid: int = 1, options: str = "{}") -> int:
    """A run another process started: running, two jobs planned, nothing done yet."""
    return await store.run_create(
        trigger="timer", status="running", provider="demo", synthetic=True, host=host, pid=pid,
        started_at=1, options=options, jobs_total=2, jobs_succeeded=0, jobs_failed=0,
        bars_fetched=0, bars_written=0, requests=0,
    )


async def test_a_second_run_joins_on_postgresql(db):
    if db.backend != "postgresql":
        pytest.skip("SQLite answers a second run with exit 75: test_a_run_while_another_holds_the_lease_exits_75")
    settings = db.settings(["AAPL", "MSFT"])
    store = await Store.open(settings.database_url_resolved())
    try:
        run_id = await running_run(store, host="other-host", pid=4242, options='{"timeframes": ["1d"]}')
        await store.jobs_create(run_id, [Instrument("AAPL", AssetClass.STOCK), Instrument("MSFT", AssetClass.STOCK)])
        await store.lease_claim(run_id, "other-host", 4242, ttl_ms=60_000)
    finally:
        await store.close()

    report = await service.run(settings, RunOptions(as_of=AS_OF))

    assert report.run_id == run_id and "joined" in (report.message or "")
    assert report.status == "succeeded"
    assert db.scalar("SELECT count(*) FROM runs") == 1
    assert db.rows("SELECT symbol, status FROM jobs ORDER BY symbol") == [("AAPL", "succeeded"), ("MSFT", "succeeded")]
    assert db.scalar("SELECT count(*) FROM bars") > 0
    assert db.rows("SELECT count(*) FROM leases") == [(0,)]  # the run is closed, its lease gone


async def test_a_run_joining_before_the_starter_created_its_jobs_adds_them_after_once(db):
    """A `run` may join in the moment between the run's row and its jobs: it is told to look
    again, then adds only what the run lacks; each symbol is one job, counted once."""
    settings = db.settings(["AAPL", "MSFT"])
    store = await Store.open(settings.database_url_resolved())
    try:
        run_id = await running_run(store)
        aapl, msft, nvda = (Instrument(s, AssetClass.STOCK) for s in ("AAPL", "MSFT", "NVDA"))
        assert await store.jobs_add(run_id, [msft, nvda]) is None  # the joiner, first: not yet
        await store.jobs_create(run_id, [aapl, msft], up_to_date=frozenset({"AAPL"}))
        assert await store.jobs_add(run_id, [msft, nvda]) is True
        assert await store.jobs_add(run_id, [nvda]) is True  # nothing new: counted nothing
    finally:
        await store.close()
    assert db.rows("SELECT symbol, status FROM jobs ORDER BY symbol") == [
        ("AAPL", "succeeded"), ("MSFT", "pending"), ("NVDA", "pending")]
    assert db.scalar("SELECT jobs_total FROM runs") == 3


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid



@pytest.mark.parametrize("how", [
    "expired",
    "holder-gone",
])
async def test_a_dead_runs_lease_is_taken_over_and_the_run_abandoned(db, how):
    settings = db.settings(["AAPL"])
    if how == "expired":  # on another host: only the expiry tells it is dead
        host, pid, ttl = "dead-host", 4242, -1_000
    else:  # on this host, its process is gone: dead now, before the expiry
        host, pid, ttl = socket.gethostname(), dead_pid(), 60_000
    store = await Store.open(settings.database_url_resolved())
    try:
        dead = await store.run_create(
            trigger="timer", status="running", provider="demo", synthetic=True, host=host,
            pid=pid, started_at=AS_OF, options="{}",
        )
        await store.lease_claim(dead, host, pid, ttl_ms=ttl)
    finally:
        await store.close()

    report = await service.run(settings, RunOptions(as_of=AS_OF))

    assert report.status == "succeeded"
    runs = {r["id"]: r for r in db.dicts("SELECT * FROM runs")}
    assert runs[dead]["status"] == RunStatus.ABANDONED.value
    assert runs[dead]["finished_at"] is not None and runs[dead]["error"]
    assert runs[report.run_id]["status"] == "succeeded"
    assert db.scalar("SELECT count(*) FROM leases") == 0  # released at the end of the run


async def test_a_timer_run_while_paused_is_skipped_unless_forced(db):
    settings = db.settings(["AAPL"])
    async with service.session_open(settings) as session:
        await session.pause("broker maintenance", by="tester")

    skipped = await service.run(settings, RunOptions(as_of=AS_OF, trigger=Trigger.TIMER))

    assert skipped.status == RunStatus.SKIPPED.value and service.exit_code_of(skipped) == EXIT_OK
    run = db.dicts("SELECT * FROM runs WHERE id = :i", i=skipped.run_id)[0]
    assert (run["status"], run["trigger"]) == ("skipped", "timer")
    assert "broker maintenance" in run["error"]
    assert db.scalar("SELECT count(*) FROM bars") == 0

    forced = await service.run(settings, RunOptions(as_of=AS_OF, trigger=Trigger.TIMER, force=True))
    assert forced.status == "succeeded" and forced.bars_written > 0

    async with service.session_open(settings) as session:
        assert (await session.resume())["was_paused"]
    resumed = await service.run(settings, RunOptions(as_of=AS_OF + MS_PER_DAY * 3, trigger=Trigger.TIMER))
    assert resumed.status == "succeeded" and resumed.bars_written > 0
    statuses = db.rows("SELECT status FROM runs ORDER BY id")
    assert statuses == [("skipped",), ("succeeded",), ("succeeded",)]
