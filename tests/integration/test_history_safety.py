"""What the provider says later never costs stored history: a bar published late fills its hole
(and the indicators after it are recomputed); a refetch that covers less than is stored keeps
the stored series and fails visibly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fake_polygon import FakePolygon

from enrichctl import service
from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import MS_PER_DAY, AssetClass, Bars, Series, Timeframe
from enrichctl.errors import EXIT_FAILED, EXIT_OK
from enrichctl.providers.demo import DemoProvider
from enrichctl.settings import Settings

KEY = "pk_history_safety_key"
AS_OF = utc_date_ms("2025-06-02") + 12 * 3_600_000  # Monday 08:00 New York
AAPL = Series("AAPL", AssetClass.STOCK, Timeframe.D1)


@pytest.fixture
async def fake() -> AsyncIterator[FakePolygon]:
    async with FakePolygon(api_key=KEY) as server:
        yield server


def settings_for(fake: FakePolygon, url: str) -> Settings:
    return Settings(
        provider="polygon",
        polygon={"api_key": KEY, "base_url": fake.url, "requests_per_minute": 0},
        database_url=url, universe=[{"symbol": "AAPL", "asset_class": "stock"}],
        timeframes=[Timeframe.D1], history_days={Timeframe.D1: 60}, retry_delay_seconds=0.01,
    )


async def market(as_of: int) -> Bars:
    demo = DemoProvider(SessionCalendar(), clock=lambda: as_of)
    return await demo.fetch_bars(AAPL, as_of - 90 * MS_PER_DAY, as_of)


async def test_a_bar_published_late_fills_its_hole_and_indicators_follow(fake, db):
    settings = settings_for(fake, db.url)
    full = await market(AS_OF)
    hole = int(full.ts[-2])  # Thursday's bar is not out yet on Monday
    fake.hold(AAPL, full.take(full.ts != hole))
    first = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(first) == EXIT_OK
    assert hole not in db.bars(AAPL).ts.tolist()

    later = AS_OF + MS_PER_DAY
    fake.hold(AAPL, await market(later))  # now the provider has it (and Monday's bar)
    second = await service.run(settings, service.RunOptions(as_of=later))

    assert service.exit_code_of(second) == EXIT_OK
    assert hole in db.bars(AAPL).ts.tolist()
    details = [d for (d,) in db.rows("SELECT detail FROM quality_issues WHERE kind = 'gap'")]
    assert any("arrived late" in d for d in details)
    db.assert_indicators_are_full_compute(settings, AAPL)


async def test_a_refetch_that_comes_back_short_keeps_the_stored_series(fake, db):
    settings = settings_for(fake, db.url)
    full = await market(AS_OF)
    fake.hold(AAPL, full)
    await service.run(settings, service.RunOptions(as_of=AS_OF))
    stored = db.scalar("SELECT count(*) FROM bars")
    assert stored > 30

    fake.hold(AAPL, full.take(full.ts >= full.ts[-10]))  # the provider now keeps 10 days only
    refresh = await service.run(settings, service.RunOptions(as_of=AS_OF, full_refresh=True))

    assert service.exit_code_of(refresh) == EXIT_FAILED
    assert "kept the stored series" in (refresh.jobs[0].error or "")
    assert db.scalar("SELECT count(*) FROM bars") == stored
    assert db.scalar("SELECT count(*) FROM indicators") == stored
