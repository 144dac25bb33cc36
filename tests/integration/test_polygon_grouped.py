"""Grouped daily: a daily update of many stocks costs one request per missing date (plus the
watermark's date, the overlap that reveals re-adjusted history), not one per symbol — and the
stored series still equal the server's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from fake_polygon import FakePolygon

from enrichctl import service
from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import BAR_FIELDS, MS_PER_DAY, AssetClass, Series, Timeframe
from enrichctl.errors import EXIT_OK
from enrichctl.providers.demo import DemoProvider
from enrichctl.settings import Settings

KEY = "pk_grouped_test_key"
AS_OF = utc_date_ms("2025-06-02") + 12 * 3_600_000  # Monday 08:00 New York: Friday is complete
LATER = AS_OF + 3 * MS_PER_DAY  # Thursday 08:00 New York: Mon, Tue, Wed are new
SYMBOLS = [f"S{i:02d}" for i in range(12)] + ["SPY"]
SERIES = [Series(s, AssetClass.ETF if s == "SPY" else AssetClass.STOCK, Timeframe.D1) for s in SYMBOLS]


@pytest.fixture
async def fake() -> AsyncIterator[FakePolygon]:
    async with FakePolygon(api_key=KEY, page_size=5000) as server:
        yield server


def settings_for(fake: FakePolygon, database_url: str, max_days: int = 5) -> Settings:
    return Settings(
        provider="polygon",
        polygon={"api_key": KEY, "base_url": fake.url, "requests_per_minute": 0,
                 "grouped_daily_max_days": max_days},
        database_url=database_url,
        universe=[{"symbol": s.symbol, "asset_class": s.asset_class} for s in SERIES],
        timeframes=[Timeframe.D1],
        history_days={Timeframe.D1: 60},
        retry_delay_seconds=0.01,
    )


async def hold_market(fake: FakePolygon, as_of: int) -> None:
    demo = DemoProvider(SessionCalendar(), clock=lambda: as_of)
    for series in SERIES:
        await fake.hold_from(demo, series, as_of - 90 * MS_PER_DAY, as_of)


async def test_a_daily_update_of_many_stocks_costs_one_request_per_date(fake, db):
    settings = settings_for(fake, db.url)
    await hold_market(fake, AS_OF)
    first = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(first) == EXIT_OK
    assert len(fake.paths("/v2/aggs/ticker")) == len(SERIES)  # new series: one each

    await hold_market(fake, LATER)
    plan = await service.run(settings, service.RunOptions(as_of=LATER, dry_run=True))
    assert plan.plan is not None
    # Friday (the watermark's session, re-read) and the three new sessions.
    assert plan.plan.grouped_days == ("2025-05-30", "2025-06-02", "2025-06-03", "2025-06-04")
    assert plan.plan.requests == 4
    assert {t.source for t in plan.plan.tasks} == {"grouped"}

    before = len(fake.requests)
    second = await service.run(settings, service.RunOptions(as_of=LATER))
    assert service.exit_code_of(second) == EXIT_OK, second.doc()
    new_paths = [r.path for r in fake.requests[before:]]
    # Four grouped days and the run's one splits request for the whole universe.
    assert new_paths[0] == "/v3/reference/splits"
    assert len(new_paths) == 5 and all(p.startswith("/v2/aggs/grouped/") for p in new_paths[1:])
    assert second.requests == 5
    assert sum(j.bars_written for j in second.jobs) == 3 * len(SERIES)
    for series in SERIES:
        held = fake.held(series)
        got = db.bars(series)
        want = held.take(held.ts >= got.ts[0])
        for name in BAR_FIELDS:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{series} {name}")
    assert db.scalar("SELECT count(*) FROM quality_issues") == 0


def grouped_body_without(fake: FakePolygon, day_ms: int, missing: str) -> dict:
    """The grouped answer for one day, as Polygon shapes it, lacking one ticker."""
    results = []
    for series in SERIES:
        bars = fake.held(series)
        i = int(np.searchsorted(bars.ts, day_ms))
        if series.symbol == missing or i >= len(bars) or bars.ts[i] != day_ms:
            continue
        results.append({"T": series.symbol, "o": bars.open[i], "h": bars.high[i], "l": bars.low[i],
                        "c": bars.close[i], "v": bars.volume[i], "vw": bars.vwap[i],
                        "n": int(bars.trades[i]), "t": day_ms + 16 * 3_600_000})
    return {"status": "OK", "adjusted": True, "queryCount": len(results),
            "resultsCount": len(results), "request_id": "x", "results": results}


async def test_a_symbol_missing_from_a_grouped_day_is_fetched_on_its_own(fake, db):
    settings = settings_for(fake, db.url)
    await hold_market(fake, AS_OF)
    await service.run(settings, service.RunOptions(as_of=AS_OF))
    await hold_market(fake, LATER)
    # S00 is absent from Tuesday's grouped answer (a late print); the series endpoint has it.
    tuesday = utc_date_ms("2025-06-03") + 4 * 3_600_000  # midnight New York
    fake.canned_grouped("2025-06-03", grouped_body_without(fake, tuesday, "S00"))
    before = len(fake.requests)

    second = await service.run(settings, service.RunOptions(as_of=LATER))

    assert service.exit_code_of(second) == EXIT_OK, second.doc()
    paths = [r.path for r in fake.requests[before:]]
    assert sum(p.startswith("/v2/aggs/grouped/") for p in paths) == 4
    assert [p for p in paths if p.startswith("/v2/aggs/ticker/")] == [
        p for p in paths if p.startswith("/v2/aggs/ticker/S00/")
    ] and len([p for p in paths if p.startswith("/v2/aggs/ticker/")]) == 1
    # It did not lose Tuesday, and nothing else was flagged.
    assert tuesday in db.bars(SERIES[0]).ts.tolist()
    assert db.scalar("SELECT count(*) FROM quality_issues") == 0


async def test_a_readjustment_no_split_explains_sends_that_symbol_to_its_own_refetch(fake, db):
    """The overlap re-read on the grouped path finds S03's history re-adjusted, with no split
    listed (the reference data lags): S03 is refetched whole on its own in the same run, its job
    succeeds, and every other symbol stays on the grouped answers."""
    settings = settings_for(fake, db.url)
    await hold_market(fake, AS_OF)
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    await hold_market(fake, LATER)
    fake.split("S03", "2025-06-03", 2)
    fake.splits.clear()  # not listed yet
    before = len(fake.requests)

    second = await service.run(settings, service.RunOptions(as_of=LATER))

    assert service.exit_code_of(second) == EXIT_OK, second.doc()
    assert all(j.status.value == "succeeded" for j in second.jobs)
    plan = {t.series.symbol: t.source for t in second.plan.tasks}
    assert set(plan.values()) == {"grouped"}
    paths = [r.path for r in fake.requests[before:]]
    own = [p for p in paths if p.startswith("/v2/aggs/ticker/")]
    assert own != [] and all(p.startswith("/v2/aggs/ticker/S03/") for p in own), own
    job = next(j for j in second.jobs if j.symbol == "S03")
    assert job.readjusted == 1
    assert "history re-adjusted" in db.scalar(
        "SELECT detail FROM quality_issues WHERE symbol = 'S03' AND kind = 'readjusted'")
    for series in SERIES:
        held = fake.held(series)
        got = db.bars(series)
        want = held.take(held.ts >= got.ts[0])
        for name in BAR_FIELDS:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{series} {name}")
    # Fetched whole: the next run plans S03 like every other series.
    again = await service.run(settings, service.RunOptions(as_of=LATER, dry_run=True))
    assert {t.mode.value for t in again.plan.tasks} == {"up_to_date"}
