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

    before = len(fake.paths("/v2/aggs/ticker/"))
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    # This run's bar requests: the split symbol's refetch, nothing for the other.
    asked = fake.paths("/v2/aggs/ticker/")[before:]
    assert asked != [] and all(p.startswith("/v2/aggs/ticker/S00/") for p in asked), asked
    assert next(j for j in report.jobs if j.symbol == "S00").doc()["actions"] == ["split 4:1 on 2025-06-02"]
    assert await assert_store_equals_fresh_fetch(fake, db) == 2
    # Fetched whole after the split: the next run costs no bar request for it.
    before = len(fake.paths("/v2/aggs/ticker/"))
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    assert len(fake.paths("/v2/aggs/ticker/")) == before


async def test_a_split_of_a_symbol_a_partial_run_left_out_is_applied_by_the_next_run(fake, db):
    """`run --symbols S00` moves the splits check to today; S01's split it saw is kept and
    the next run that covers S01 refetches it, though that run's own check no longer lists it."""
    settings = settings_for(fake, db.url, ["S00", "S01"])
    await hold(fake, ["S00", "S01"], AS_OF)
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    await hold(fake, ["S00", "S01"], LATER)
    fake.split("S01", "2025-06-03", 2)

    partial = await service.run(settings, service.RunOptions(as_of=LATER, symbols=["S00"]))
    assert service.exit_code_of(partial) == EXIT_OK, partial.doc()
    assert [j.symbol for j in partial.jobs] == ["S00"]
    assert db.dicts("SELECT symbol, ex_date, ratio FROM corporate_actions") == [
        {"symbol": "S01", "ex_date": "2025-06-03", "ratio": 2.0}]

    before = len(fake.paths("/v3/reference/splits"))
    report = await service.run(settings, service.RunOptions(as_of=LATER + HOUR))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert len(fake.paths("/v3/reference/splits")) == before + 1  # asked from today on: empty
    assert next(j for j in report.jobs if j.symbol == "S01").doc()["actions"] == ["split 2:1 on 2025-06-03"]
    assert {t.series.symbol: t.mode.value for t in report.plan.tasks} == {"S00": "up_to_date", "S01": "full"}
    assert await assert_store_equals_fresh_fetch(fake, db) == 2


async def test_a_backfill_after_a_split_refetches_the_whole_series(fake, db):
    """`--since D1 --until D2` with a split due: the stored bars outside the range are
    re-adjusted too, so the whole series is refetched, not only the range."""
    settings = settings_for(fake, db.url, ["S00"])
    await hold(fake, ["S00"], AS_OF)
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    await hold(fake, ["S00"], LATER)
    fake.split("S00", "2025-06-03", 2)
    since, until = AS_OF - 85 * MS_PER_DAY, AS_OF - 70 * MS_PER_DAY  # older than anything stored

    report = await service.run(settings, service.RunOptions(as_of=LATER, since=since, until=until))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    task = report.plan.tasks[0]
    assert (task.mode.value, task.action) == ("full", "split 2:1 on 2025-06-03")
    stored = db.bars(Series("S00", AssetClass.STOCK, Timeframe.D1))
    assert int(stored.ts[0]) >= since and int(stored.ts[0]) < since + 4 * MS_PER_DAY
    assert int(stored.ts[-1]) > AS_OF  # the bars after --until stayed, adjusted
    assert await assert_store_equals_fresh_fetch(fake, db) == 1


async def test_a_backfill_from_another_provider_replaces_the_whole_series(fake, db):
    """Demo bars, then a polygon backfill of an older range: never both in one series."""
    demo_settings = settings_for(fake, db.url, ["AAPL"], provider="demo")
    assert service.exit_code_of(await service.run(demo_settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    await hold(fake, ["AAPL"], AS_OF + 7 * MS_PER_DAY)  # another synthetic walk than the demo's
    held = fake.held(Series("AAPL", AssetClass.STOCK, Timeframe.D1))
    fake.hold(Series("AAPL", AssetClass.STOCK, Timeframe.D1), held.take(held.ts <= AS_OF))
    since, until = AS_OF - 85 * MS_PER_DAY, AS_OF - 70 * MS_PER_DAY

    report = await service.run(settings_for(fake, db.url, ["AAPL"]),
                               service.RunOptions(as_of=AS_OF, since=since, until=until))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert report.plan.tasks[0].mode.value == "full"
    row = db.dicts("SELECT provider, synthetic FROM series")[0]
    assert row["provider"] == "polygon" and not row["synthetic"]
    assert db.scalar("SELECT count(*) FROM bars WHERE symbol = 'AAPL' AND ts > :u", u=until) > 0
    assert await assert_store_equals_fresh_fetch(fake, db) == 1


async def test_a_split_refetches_every_stored_timeframe_of_the_symbol(fake, db):
    """`run --timeframes 1d` after a split: the stored hourly series is refetched too."""
    both = (Timeframe.D1, Timeframe.H1)
    settings = settings_for(fake, db.url, ["S00"], timeframes=both)
    await hold(fake, ["S00"], AS_OF, both)
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    await hold(fake, ["S00"], LATER, both)
    fake.split("S00", "2025-06-03", 2)

    report = await service.run(settings, service.RunOptions(as_of=LATER, timeframes=(Timeframe.D1,)))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert {t.series.timeframe.value: t.mode.value for t in report.plan.tasks} == {"1d": "full", "1h": "full"}
    assert await assert_store_equals_fresh_fetch(fake, db) == 2
    # Both fetched whole after the split: the next plain run refetches neither.
    again = await service.run(settings, service.RunOptions(as_of=LATER, dry_run=True))
    assert {t.mode.value for t in again.plan.tasks} == {"up_to_date"}


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


async def test_a_known_ticker_with_no_bars_succeeds_with_a_warning_and_is_looked_up_once(fake, db):
    """QUIET is listed (active) but has no bar in the range: its job succeeds, a warning says
    why the series is empty, nothing reports it stale, and the next nights ask the bars again
    (they may start any day) but not the reference data."""
    fake.tickers["QUIET"] = True
    settings = settings_for(fake, db.url, ["QUIET"])
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    job = report.jobs[0]
    assert (job.status.value, job.bars_written) == ("succeeded", 0)
    assert db.dicts("SELECT kind, severity, detail FROM quality_issues WHERE symbol = 'QUIET'") == [
        {"kind": "gap", "severity": "warning", "detail": "polygon has no bars of QUIET in the range"}]
    async with service.session_open(settings) as session:
        health = service.health(await session.overview(AS_OF))
    assert health["status"] == "healthy", health
    for night in (1, 2):
        again = await service.run(settings, service.RunOptions(as_of=LATER + night * MS_PER_DAY))
        assert service.exit_code_of(again) == EXIT_OK, again.doc()
    assert len(fake.paths("/v2/aggs/ticker/QUIET/")) == 3
    assert fake.paths("/v3/reference/tickers/") == ["/v3/reference/tickers/QUIET"]
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE symbol = 'QUIET'") == 1  # replaced each night, not added


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
    async with service.session_open(settings) as session:
        health = service.health(await session.overview(LATER))
    assert health["status"] == "healthy", health


async def test_a_ticker_delisted_after_its_last_bar_is_shown_delisted_not_stale(fake, db):
    """GONE stopped trading 20 days ago: the first run stores its bars (and finds them stale);
    the next one, with nothing new, asks the reference data, which says inactive. From then on
    every face says delisted, nothing counts it stale, and `status --check` stays green."""
    from aiohttp.test_utils import TestClient, TestServer

    from enrichctl.web import server as web

    await hold(fake, ["GONE", "S00"], AS_OF - 20 * MS_PER_DAY)
    await hold(fake, ["S00"], LATER)
    fake.tickers["GONE"] = False
    settings = settings_for(fake, db.url, ["GONE", "S00"])
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    report = await service.run(settings, service.RunOptions(as_of=LATER))
    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert fake.paths("/v3/reference/tickers/") == ["/v3/reference/tickers/GONE"]

    async with service.session_open(settings) as session:
        overview = await session.overview(LATER)
        status = await session.job_status("GONE", LATER)
        inventory = await session.series_inventory(LATER)
    gone = next(s for s in overview["processing_symbols"] if s["symbol"] == "GONE")
    assert (gone["delisted"], gone["stale"]) == (True, False)
    assert (status["delisted"], status["series"][0]["delisted"], status["series"][0]["stale"]) == (True, True, False)
    assert status["series"][0]["delisted_at"] is not None
    assert overview["totals"]["stale"] == 0
    assert service.health(overview)["status"] == "healthy", service.health(overview)
    assert service.health_of_symbol(status)["status"] == "healthy"
    assert [(s["symbol"], s["delisted"], s["stale"]) for s in inventory["series"]] == [
        ("GONE", True, False), ("S00", False, False)]
    async with TestClient(TestServer(web.app_create(settings))) as client:
        text = await (await client.get("/metrics")).text()
    assert 'enrichctl_series_delisted{' in text
    delisted = [line for line in text.splitlines() if line.startswith("enrichctl_series_delisted{")]
    assert any('symbol="GONE"' in line and line.endswith(" 1.0") for line in delisted), delisted
    assert any('symbol="GONE"' in line and line.endswith(" 0.0")
               for line in text.splitlines() if line.startswith("enrichctl_series_stale{"))
    # Not refetched night after night, and asked about no more.
    before = len(fake.paths("/v2/aggs/ticker/GONE/"))
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=LATER + MS_PER_DAY))) == EXIT_OK
    assert len(fake.paths("/v2/aggs/ticker/GONE/")) == before
    assert len(fake.paths("/v3/reference/tickers/")) == 1


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


def with_extended_hours(bars: Bars) -> Bars:
    """Polygon-like hourly bars: after each session's last regular bar (15:00 New York) four
    more, 16:00 to 19:00, trading thinly around its close."""
    last = np.flatnonzero(np.diff(bars.ts, append=bars.ts[-1] + MS_PER_DAY) > 2 * HOUR)
    ts = np.concatenate([bars.ts[last] + k * HOUR for k in range(1, 5)])
    close = np.concatenate([bars.close[last] * (1 + 0.0005 * k) for k in range(1, 5)])
    extra = Bars(ts, close, close * 1.0005, close * 0.9995, close, np.full(len(ts), 1000.0), close,
                 np.full(len(ts), 10.0))
    return Bars.concat([bars, extra]).sorted()


async def test_hourly_stock_completeness_counts_only_session_bars(fake, db):
    """An hourly stock series with extended-hours bars: clean, it scores at least 0.99; with a
    fifth of its sessions missing at most 0.85, however many extended-hours bars it holds."""
    demo = DemoProvider(SessionCalendar(), clock=lambda: AS_OF)
    clean, holed = (Series(s, AssetClass.STOCK, Timeframe.H1) for s in ("HCLEAN", "HFIFTH"))
    for s in (clean, holed):
        bars = await demo.fetch_bars(s, AS_OF - 60 * MS_PER_DAY, AS_OF)
        fake.hold(s, with_extended_hours(bars))
    held = fake.held(holed)
    session = np.cumsum(np.diff(held.ts, prepend=held.ts[0]) > 8 * HOUR)  # 0, 1, 2 ... per day
    last = session[-1]
    clean_score = await scored(fake, db, clean, lambda i: i >= 0, (Timeframe.H1,))
    fifth = await scored(fake, db, holed, lambda i: (session[i] % 5 != 2) | (session[i] == last), (Timeframe.H1,))
    assert clean_score >= 0.99
    assert fifth <= 0.85
    # 7 in-session bars (09:00 to 15:00) of each stored session; the extended ones not.
    stored = db.bars(clean)
    days = np.unique((stored.ts - 4 * HOUR) // MS_PER_DAY)  # New York days (EDT all along)
    row = db.dicts("SELECT session_bars, bar_count FROM series WHERE symbol = 'HCLEAN'")[0]
    assert row["session_bars"] == 7 * len(days) < row["bar_count"], row
    # An incremental run moves the count by its new bars (the re-read overlap counts once).
    later = DemoProvider(SessionCalendar(), clock=lambda: LATER)
    fake.hold(clean, with_extended_hours(await later.fetch_bars(clean, AS_OF - 60 * MS_PER_DAY, LATER)))
    settings = settings_for(fake, db.url, [clean.symbol], timeframes=(Timeframe.H1,))
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=LATER))) == EXIT_OK
    stored = db.bars(clean)
    days = np.unique((stored.ts - 4 * HOUR) // MS_PER_DAY)
    row = db.dicts("SELECT session_bars, quality_score FROM series WHERE symbol = 'HCLEAN'")[0]
    assert row["session_bars"] == 7 * len(days) and row["quality_score"] >= 0.99, row
    print(f"hourly stock scores: clean {clean_score:.4f}, a fifth of sessions missing {fifth:.4f}")


async def test_a_run_over_gaps_and_bad_prints_records_them(fake, db):
    """The provider's data is damaged: a lost session and a bad print in the daily series, four
    hours lost inside a session and a frozen feed in the hourly one. The run records each as a
    quality issue, and the score falls below that of clean data."""
    both = (Timeframe.D1, Timeframe.H1)
    await hold(fake, ["BAD"], AS_OF, both)
    daily, hourly = (Series("BAD", AssetClass.STOCK, tf) for tf in both)
    assert fake.gap(daily, utc_date_ms("2025-05-20"), utc_date_ms("2025-05-21")) == 1
    fake.bad_print(daily, utc_date_ms("2025-05-14") + 4 * HOUR)  # midnight New York
    tuesday_10 = utc_date_ms("2025-05-27") + 14 * HOUR  # 10:00 New York
    assert fake.gap(hourly, tuesday_10, tuesday_10 + 3 * HOUR) == 4
    fake.freeze(hourly, utc_date_ms("2025-05-22") + 13 * HOUR, 6)  # 09:00 to 14:00 New York

    report = await service.run(settings_for(fake, db.url, ["BAD"], timeframes=both), service.RunOptions(as_of=AS_OF))

    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    found = {(r["timeframe"], r["kind"]): r["detail"] for r in db.dicts(
        "SELECT timeframe, kind, detail FROM quality_issues WHERE symbol = 'BAD'")}
    assert found[("1d", "gap")] == "1 session missing: 2025-05-20"
    assert found[("1d", "bad_print")].startswith("one-bar print at 2025-05-14T04:00:00Z: close ")
    assert found[("1h", "intraday_hole")] == (
        "4 bars missing inside the session from 2025-05-27T14:00:00Z to 2025-05-27T17:00:00Z")
    assert found[("1h", "frozen_price")].startswith("6 identical bars from 2025-05-22T13:00:00Z")
    scores = {r["timeframe"]: round(r["quality_score"], 4) for r in
              db.dicts("SELECT timeframe, quality_score FROM series WHERE symbol = 'BAD'")}
    assert scores["1d"] < 0.99 and scores["1h"] < 0.99, scores
    print(f"damaged series scores: {scores}")


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
