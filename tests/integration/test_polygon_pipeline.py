"""The whole pipeline (``service.run``) with the Polygon provider against a fake Polygon on
127.0.0.1: the stored series equal what the server holds, re-adjusted history is refetched, a
refused key exits 78, and the key is nowhere to be found afterwards. ``db`` (from conftest) runs
the first two on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fake_polygon import FakePolygon

from enrichctl import service
from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import BAR_FIELDS, MS_PER_DAY, AssetClass, Series, Timeframe
from enrichctl.errors import EXIT_CONFIG, EXIT_OK
from enrichctl.pipeline.plan import Mode
from enrichctl.providers.demo import DemoProvider
from enrichctl.settings import Settings

if TYPE_CHECKING:
    from conftest import Database  # the ``db`` fixture: one empty database per backend

KEY = "pk_GREPME_5d1e8b7f0a"
AS_OF = utc_date_ms("2025-06-02") + 12 * 3_600_000  # Monday 08:00 New York: Friday is complete
LATER = AS_OF + 3 * MS_PER_DAY  # Thursday 08:00 New York
UNIVERSE = {"AAPL": AssetClass.STOCK, "MSFT": AssetClass.STOCK, "X:BTCUSD": AssetClass.CRYPTO,
            "I:SPX": AssetClass.INDEX}
TIMEFRAMES = (Timeframe.D1, Timeframe.H1)
HISTORY_DAYS = {Timeframe.D1: 120, Timeframe.H1: 20}
SERIES = [Series(s, c, tf) for s, c in UNIVERSE.items() for tf in TIMEFRAMES]


@pytest.fixture(scope="module")
def calendar() -> SessionCalendar:
    return SessionCalendar()


@pytest.fixture
async def fake() -> AsyncIterator[FakePolygon]:
    async with FakePolygon(api_key=KEY, page_size=500) as server:
        yield server


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every enrichctl log record, even if logging_setup turned propagation off."""
    logger = logging.getLogger("enrichctl")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)


def settings_for(fake: FakePolygon, database_url: str, key: str = KEY) -> Settings:
    return Settings(
        provider="polygon",
        polygon={"api_key": key, "base_url": fake.url, "requests_per_minute": 0},
        database_url=database_url,
        universe=[{"symbol": s, "asset_class": c} for s, c in UNIVERSE.items()],
        timeframes=TIMEFRAMES,
        history_days=HISTORY_DAYS,
        retry_delay_seconds=0.01,
    )


async def serve_demo_market(fake: FakePolygon, calendar: SessionCalendar, as_of: int) -> None:
    """The server holds 150 days of every series, complete as of ``as_of``."""
    demo = DemoProvider(calendar, clock=lambda: as_of)
    for series in SERIES:
        await fake.hold_from(demo, series, as_of - 150 * MS_PER_DAY, as_of)


def assert_store_equals_server(
    db: Database, fake: FakePolygon, first_ts: dict[Series, int], end: dict[Series, int]
) -> None:
    """Read back through an independent driver: every bar the server holds in the range."""
    for series in SERIES:
        held = fake.held(series)
        want = held.take((held.ts >= first_ts[series]) & (held.ts <= end[series]))
        got = db.bars(series)
        assert len(want) > 0
        assert len(got) == len(want), series
        for name in BAR_FIELDS:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name),
                                          err_msg=f"{series} {name}")


def plan_of(report: service.RunReport) -> dict[Series, object]:
    assert report.plan is not None
    return {t.series: t for t in report.plan.tasks}


async def test_every_series_ends_equal_to_the_server_and_readjusted_history_is_refetched(
    fake: FakePolygon, calendar: SessionCalendar, db: Database
) -> None:
    settings = settings_for(fake, db.url)
    await serve_demo_market(fake, calendar, AS_OF)
    first = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(first) == EXIT_OK, first.doc()
    plan1 = plan_of(first)
    assert {p.mode for p in plan1.values()} == {Mode.NEW}
    starts = {s: p.history_start for s, p in plan1.items()}
    assert_store_equals_server(db, fake, starts, {s: p.end for s, p in plan1.items()})
    assert first.requests == len(fake.requests)  # one stored record per request the server saw

    # Three days later: new bars, and a 2:1 split re-adjusts AAPL's whole history.
    await serve_demo_market(fake, calendar, LATER)
    fake.readjust("AAPL", 2.0)
    seen_before = len(fake.requests)
    second = await service.run(settings, service.RunOptions(as_of=LATER))
    assert service.exit_code_of(second) == EXIT_OK, second.doc()
    plan2 = plan_of(second)
    assert {p.mode for p in plan2.values()} == {Mode.INCREMENTAL}
    aapl = next(j for j in second.jobs if j.symbol == "AAPL")
    assert aapl.readjusted == 2 and all(j.readjusted == 0 for j in second.jobs if j.symbol != "AAPL")
    # A re-adjusted series is replaced from the (new) history start; the others grow.
    starts = {s: (plan2[s].history_start if s.symbol == "AAPL" else starts[s]) for s in SERIES}
    assert_store_equals_server(db, fake, starts, {s: p.end for s, p in plan2.items()})
    assert second.requests == len(fake.requests) - seen_before == len(SERIES) + 2 + 1  # and the run's one splits request
    async with service.store_open(settings) as store:
        issues = await store.issues_recent("AAPL", "1d")
    assert any(i.kind == "readjusted" and "refetched" in i.detail for i in issues)


async def test_a_refused_key_stops_the_run_with_exit_78_and_stores_nothing(
    fake: FakePolygon, calendar: SessionCalendar, db: Database
) -> None:
    await serve_demo_market(fake, calendar, AS_OF)
    settings = settings_for(fake, db.url, key="pk_not_the_right_one")
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(report) == EXIT_CONFIG
    assert report.aborted and "refused the API key" in (report.error or "")
    # Jobs already in flight, and the run's splits request; none retried.
    assert 1 <= len(fake.requests) <= len(UNIVERSE) + 1
    assert {r.status for r in fake.requests} == {401}
    assert db.scalar("SELECT count(*) FROM bars") == 0


async def test_the_key_is_in_no_file_log_or_document(
    fake: FakePolygon, calendar: SessionCalendar, tmp_path: Path,
    captured_logs: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(fake, f"sqlite:///{tmp_path / 'enrich.db'}")
    await serve_demo_market(fake, calendar, AS_OF)
    # A server that echoes the key back in its errors: a 404 fails one series...
    fake.fail_next(404, body={"status": "ERROR", "request_id": "r", "error": f"no such data for {KEY}"})
    first = await service.run(settings, service.RunOptions(as_of=AS_OF))
    # ...and a 403 aborts the next run.
    fake.fail_next(403, body={"status": "NOT_AUTHORIZED", "request_id": "r",
                              "message": f"{KEY} is not entitled to this data"})
    second = await service.run(settings, service.RunOptions(as_of=LATER))
    assert second.aborted and "***" in (second.error or "")

    async with service.session_open(settings) as session:
        documents = {
            "overview": await session.overview(),
            "metrics": await session.metrics(),
            "history": await session.history(10),
            "job_status": await session.job_status("AAPL"),
            "first": first.doc(),
            "second": second.doc(),
        }
    for name, doc in documents.items():
        assert KEY not in json.dumps(doc, default=str), name
    assert "AAPL" in json.dumps(documents["overview"])  # the documents are not empty
    files = sorted(tmp_path.glob("enrich.db*"))  # the database, its WAL and shared memory
    assert files and all(KEY.encode() not in f.read_bytes() for f in files)
    assert any(b"***" in f.read_bytes() for f in files)  # the echoed errors were stored, redacted
    assert captured_logs.records and KEY not in captured_logs.text
    assert all(KEY not in f"{r.path}?{r.query_string}" for r in fake.requests)
