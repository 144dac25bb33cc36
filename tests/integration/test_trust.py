"""Data a quant can trust unattended: after any run every stored series equals a fresh full
fetch from the provider (the fake Polygon over loopback), on SQLite and PostgreSQL — through a
split on the grouped path, a split with no new bar due, demo data then real, an unknown and a
delisted ticker; and the quality score measures how much is missing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from conftest import bars_equal
from fake_polygon import FakePolygon

from enrichctl import service
from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import MS_PER_DAY, AssetClass, Bars, Series, Timeframe
from enrichctl.errors import EXIT_FAILED, EXIT_OK
from enrichctl.providers.demo import DemoProvider
from enrichctl.providers.polygon import PolygonProvider
from enrichctl.settings import PolygonSettings, Settings

KEY = "pk_trust_test_key"
HOUR = 3_600_000
AS_OF = utc_date_ms("2025-06-02") + 12 * HOUR  # Monday 08:00 New York: Friday is complete
LATER = AS_OF + 3 * MS_PER_DAY  # Thursday 08:00: Mon, Tue, Wed are new
STOCKS = [f"S{i:02d}" for i in range(8)]


@pytest.fixture
async def fake() -> AsyncIterator[FakePolygon]:
    async with FakePolygon(api_key=KEY, page_size=5000) as server:
        yield server


def settings_for(fake: FakePolygon, url: str, symbols: list[str], timeframes=(Timeframe.D1,),
                 provider: str = "polygon") -> Settings:
    return Settings(
        provider=provider,
        polygon={"api_key": KEY, "base_url": fake.url, "requests_per_minute": 0,
                 "grouped_daily_max_days": 5},
        database_url=url,
        universe=[{"symbol": s} for s in symbols],
        timeframes=list(timeframes),
        history_days={Timeframe.D1: 60, Timeframe.H1: 20},
        retry_delay_seconds=0.01, max_retries=0,
    )


async def hold(fake: FakePolygon, symbols: list[str], as_of: int, timeframes=(Timeframe.D1,)) -> None:
    demo = DemoProvider(SessionCalendar(), clock=lambda: as_of)
    for symbol in symbols:
        for tf in timeframes:
            await fake.hold_from(demo, Series(symbol, AssetClass.STOCK, tf), as_of - 90 * MS_PER_DAY, as_of)


async def assert_store_equals_fresh_fetch(fake: FakePolygon, db) -> int:
    """Every stored series against a fresh fetch of its whole span from the provider."""
    provider = PolygonProvider(PolygonSettings(api_key=KEY, base_url=fake.url, requests_per_minute=0),
                               SessionCalendar())
    checked = 0
    try:
        for row in db.dicts("SELECT symbol, timeframe, asset_class, first_ts, watermark FROM series"):
            if row["first_ts"] is None:
                continue
            series = Series(row["symbol"], AssetClass(row["asset_class"]), Timeframe(row["timeframe"]))
            fresh = (await provider.fetch_bars(series, row["first_ts"], row["watermark"])).sorted()
            assert bars_equal(db.bars(series), fresh), f"{series}: stored bars differ from a fresh fetch"
            checked += 1
    finally:
        await provider.aclose()
    return checked


def split_day_bars(bars: Bars, day: str) -> int:
    return int(np.count_nonzero(bars.ts < utc_date_ms(day)))


async def test_a_split_on_the_grouped_path_refetches_that_symbol_in_the_same_run(fake, db):
    settings = settings_for(fake, db.url, STOCKS)
    await hold(fake, STOCKS, AS_OF)
    first = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(first) == EXIT_OK, first.doc()
    splits_asked = len(fake.paths("/v3/reference/splits"))
    assert splits_asked == 1 and len(fake.paths("/v3/reference/dividends")) == 1

    await hold(fake, STOCKS, LATER)
    fake.split("S03", "2025-06-03", 2)
    before = len(fake.requests)
    second = await service.run(settings, service.RunOptions(as_of=LATER))

    assert service.exit_code_of(second) == EXIT_OK, second.doc()
    paths = [r.path for r in fake.requests[before:]]
    # One splits request for the whole universe; dividends waited for their week.
    assert sum(p == "/v3/reference/splits" for p in paths) == 1
    assert not any(p.startswith("/v3/reference/dividends") for p in paths)
    assert [p for p in paths if p.startswith("/v2/aggs/ticker/")] == [
        p for p in paths if p.startswith("/v2/aggs/ticker/S03/")] != []
    job = next(j for j in second.jobs if j.symbol == "S03")
    assert job.doc()["actions"] == ["split 2:1 on 2025-06-03"]
    detail = db.scalar("SELECT detail FROM quality_issues WHERE symbol = 'S03' AND kind = 'readjusted'")
    assert "split 2:1 on 2025-06-03" in detail
    assert db.scalar("SELECT count(*) FROM corporate_actions WHERE symbol = 'S03'") == 1
    assert await assert_store_equals_fresh_fetch(fake, db) == len(STOCKS)


@pytest.mark.parametrize("timeframe", [Timeframe.D1, Timeframe.H1])
async def test_a_split_with_no_new_bar_due_is_noticed(fake, db, timeframe):
    settings = settings_for(fake, db.url, ["S00", "S01"], timeframes=(timeframe,))
    friday_evening = AS_OF - 2 * MS_PER_DAY - 12 * HOUR + 20 * HOUR  # Sat 00:00 UTC: Fri complete
    await hold(fake, ["S00", "S01"], friday_evening, (timeframe,))
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=friday_evening))) == EXIT_OK
    # The split executes Monday; Monday 08:00 New York no new bar is due.
    fake.split("S00", "2025-06-02", 4)
    plan = await service.run(settings, service.RunOptions(as_of=AS_OF, dry_run=True))
    assert {t.series.symbol: t.mode.value for t in plan.plan.tasks} == {"S00": "up_to_date", "S01": "up_to_date"}

    report = await service.run(settings, service.RunOptions(as_of=AS_OF))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert [p for p in fake.paths("/v2/aggs/ticker/") if "/S01/" in p] != []
    assert next(j for j in report.jobs if j.symbol == "S00").doc()["actions"] == ["split 4:1 on 2025-06-02"]
    assert await assert_store_equals_fresh_fetch(fake, db) == 2
    # Fetched whole after the split: the next run costs no bar request for it.
    before = len(fake.paths("/v2/aggs/ticker/"))
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    assert len(fake.paths("/v2/aggs/ticker/")) == before


async def test_demo_data_is_replaced_whole_by_the_first_real_run(fake, db):
    demo_settings = settings_for(fake, db.url, ["AAPL"], provider="demo")
    assert service.exit_code_of(await service.run(demo_settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    assert db.scalar("SELECT synthetic FROM series WHERE symbol = 'AAPL'") in (1, True)
    # The real provider's bars differ from the demo's (another day's synthetic walk).
    await hold(fake, ["AAPL"], AS_OF + 7 * MS_PER_DAY)
    held = fake.held(Series("AAPL", AssetClass.STOCK, Timeframe.D1))
    fake.hold(Series("AAPL", AssetClass.STOCK, Timeframe.D1), held.take(held.ts <= AS_OF))

    report = await service.run(settings_for(fake, db.url, ["AAPL"]), service.RunOptions(as_of=AS_OF))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    row = db.dicts("SELECT provider, synthetic FROM series WHERE symbol = 'AAPL'")[0]
    assert row["provider"] == "polygon" and not row["synthetic"]
    assert report.plan.tasks[0].mode.value == "full"
    assert await assert_store_equals_fresh_fetch(fake, db) == 1


async def test_an_unknown_ticker_fails_its_job_and_keeps_no_series(fake, db):
    await hold(fake, ["AAPL"], AS_OF)
    report = await service.run(settings_for(fake, db.url, ["AAPL", "NOPEX"]), service.RunOptions(as_of=AS_OF))

    assert service.exit_code_of(report) == EXIT_FAILED
    job = next(j for j in report.jobs if j.symbol == "NOPEX")
    assert job.status.value == "failed" and "unknown to polygon: NOPEX" in job.error
    assert db.scalar("SELECT count(*) FROM series WHERE symbol = 'NOPEX'") == 0
    assert fake.paths("/v3/reference/tickers/NOPEX") == ["/v3/reference/tickers/NOPEX"]
    assert await assert_store_equals_fresh_fetch(fake, db) == 1


async def test_a_delisted_ticker_is_marked_and_not_refetched(fake, db):
    fake.tickers["GONE"] = False
    settings = settings_for(fake, db.url, ["GONE"])
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert db.scalar("SELECT delisted_at FROM series WHERE symbol = 'GONE'") is not None
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE symbol = 'GONE' AND kind = 'stale'") == 0
    before = len(fake.paths("/v2/aggs/ticker/"))
    again = await service.run(settings, service.RunOptions(as_of=LATER))
    assert service.exit_code_of(again) == EXIT_OK
    assert len(fake.paths("/v2/aggs/ticker/")) == before


async def scored(fake: FakePolygon, db, series: Series, keep, timeframes) -> float:
    held = fake.held(series)
    fake.hold(series, held.take(keep(np.arange(len(held)))))
    settings = settings_for(fake, db.url, [series.symbol], timeframes=timeframes)
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    return db.scalar("SELECT quality_score FROM series WHERE symbol = :s", s=series.symbol)


async def test_the_score_measures_missing_data(fake, db):
    stock = Series("FIFTH", AssetClass.STOCK, Timeframe.D1)
    clean = Series("CLEAN", AssetClass.STOCK, Timeframe.D1)
    crypto = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.H1)
    demo = DemoProvider(SessionCalendar(), clock=lambda: AS_OF)
    for s in (stock, clean):
        await fake.hold_from(demo, s, AS_OF - 90 * MS_PER_DAY, AS_OF)
    await fake.hold_from(demo, crypto, AS_OF - 30 * MS_PER_DAY, AS_OF)

    assert await scored(fake, db, clean, lambda i: i >= 0, (Timeframe.D1,)) >= 0.99
    # Every fifth session missing (never the first or last stored bar).
    fifth = await scored(fake, db, stock, lambda i: (i % 5 != 2), (Timeframe.D1,))
    assert fifth <= 0.85
    # 80 % of the hourly crypto bars missing.
    crypto_score = await scored(fake, db, crypto, lambda i: (i % 5 == 0), (Timeframe.H1,))
    assert crypto_score <= 0.25
    print(f"scores: clean 1.0+, a fifth missing {fifth:.2f}, crypto 80% missing {crypto_score:.2f}")


GOOGL = Series("GOOGL", AssetClass.STOCK, Timeframe.D1)
BEFORE_SPLIT = utc_date_ms("2022-07-15") + 12 * HOUR  # Friday 08:00 New York
AFTER_SPLIT = utc_date_ms("2022-07-20") + 12 * HOUR  # Wednesday: the split of Monday is done


async def test_a_demo_run_takes_the_split_path_offline(db):
    """The demo provider's split (GOOGL 20:1 on 2022-07-18) goes the reference path a Polygon
    split goes: listed once it has happened, stored, and the series refetched adjusted."""
    settings = db.settings(["GOOGL"], history_days={"1d": 60})
    first = await service.run(settings, service.RunOptions(as_of=BEFORE_SPLIT))
    assert service.exit_code_of(first) == EXIT_OK, first.doc()
    unadjusted = db.bars(GOOGL)

    report = await service.run(settings, service.RunOptions(as_of=AFTER_SPLIT))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    job = next(j for j in report.jobs if j.symbol == "GOOGL")
    assert job.doc()["actions"] == ["split 20:1 on 2022-07-18"]
    assert report.plan.tasks[0].mode.value == "full"
    assert db.dicts("SELECT symbol, kind, ex_date, ratio, provider FROM corporate_actions") == [
        {"symbol": "GOOGL", "kind": "split", "ex_date": "2022-07-18", "ratio": 20.0, "provider": "demo"}]
    assert "split 20:1 on 2022-07-18" in db.scalar(
        "SELECT detail FROM quality_issues WHERE symbol = 'GOOGL' AND kind = 'readjusted'")
    stored = db.bars(GOOGL)
    fresh = await DemoProvider(SessionCalendar(), clock=lambda: AFTER_SPLIT).fetch_bars(
        GOOGL, int(stored.ts[0]), int(stored.ts[-1]))
    assert bars_equal(stored, fresh), "the stored series is not the adjusted one"
    # Friday 15 July became complete in between; every bar before the split is adjusted.
    assert split_day_bars(stored, "2022-07-18") == len(unadjusted) + 1
    n = len(unadjusted)
    assert np.array_equal(stored.ts[:n], unadjusted.ts)
    np.testing.assert_array_equal(stored.close[:n], np.round(unadjusted.close / 20, 4))
    np.testing.assert_array_equal(stored.volume[:n], unadjusted.volume * 20)
    # Adjusted, the history runs on into the split without a jump a check would flag.
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE symbol = 'GOOGL' AND kind = 'price_spike'") == 0
    db.assert_indicators_are_full_compute(settings, GOOGL)


async def test_after_a_season_of_runs_the_store_equals_a_fresh_full_fetch(fake, db):
    """Demo data, then real; a split on the grouped path; a value damaged behind enrichctl's
    back, found by verify and repaired by the next run; an unknown ticker throughout. At the end
    every stored series equals a fresh full fetch and verify --against-provider finds nothing."""
    from enrichctl.verify import VerifyOptions, verify

    symbols = ["S00", "S01", "S02"]
    demo = await service.run(settings_for(fake, db.url, symbols, provider="demo"),
                             service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(demo) == EXIT_OK, demo.doc()
    settings = settings_for(fake, db.url, [*symbols, "NOPEX"])
    await hold(fake, symbols, AS_OF + 7 * MS_PER_DAY)  # another synthetic walk than the demo's
    for s in symbols:
        held = fake.held(Series(s, AssetClass.STOCK, Timeframe.D1))
        fake.hold(Series(s, AssetClass.STOCK, Timeframe.D1), held.take(held.ts <= AS_OF))
    real = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(real) == EXIT_FAILED  # NOPEX only
    assert {t.series.symbol: t.mode.value for t in real.plan.tasks if t.series.symbol != "NOPEX"} == dict.fromkeys(symbols, "full")

    await hold(fake, symbols, LATER)
    fake.split("S01", "2025-06-03", 3)
    split = await service.run(settings, service.RunOptions(as_of=LATER))
    assert next(j for j in split.jobs if j.symbol == "S01").doc()["actions"] == ["split 3:1 on 2025-06-03"]

    s02 = Series("S02", AssetClass.STOCK, Timeframe.D1)
    damaged = int(db.bars(s02).ts[7])
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE bars SET vwap = vwap + 0.5 WHERE symbol = 'S02' AND ts = {damaged}")
    found = await verify(settings, None, VerifyOptions(against_provider=True))
    assert not found["ok"]
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE kind = 'provider_mismatch'") == 1
    repaired = await service.run(settings, service.RunOptions(as_of=LATER))
    assert service.exit_code_of(repaired) == EXIT_FAILED  # NOPEX only
    assert all(j.status.value == "succeeded" for j in repaired.jobs if j.symbol != "NOPEX")

    assert db.scalar("SELECT count(*) FROM series WHERE symbol = 'NOPEX'") == 0
    assert db.scalar("SELECT count(*) FROM series WHERE synthetic") == 0
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE kind = 'provider_mismatch'") == 0
    assert await assert_store_equals_fresh_fetch(fake, db) == len(symbols)
    final = await verify(settings, None, VerifyOptions(recompute=True, against_provider=True))
    assert final["ok"], [s for s in final["series"] if not s["ok"]]
