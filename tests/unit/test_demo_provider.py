"""The demo provider: deterministic synthetic bars on the same calendar the quality checks use."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from enrichctl.calendar import SessionCalendar, calendar_days, utc_date_ms
from enrichctl.domain import BAR_FIELDS, MS_PER_DAY, AssetClass, Bars, Series, Timeframe
from enrichctl.providers.base import Provider, RequestRecord
from enrichctl.providers.demo import CHUNK_BARS, DemoProvider

NEW_YORK = ZoneInfo("America/New_York")
LATE_2025 = utc_date_ms("2025-12-31")

AAPL_1D = Series("AAPL", AssetClass.STOCK, Timeframe.D1)
BTC_1D = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.D1)
EURUSD_1D = Series("C:EURUSD", AssetClass.FOREX, Timeframe.D1)

SYMBOL_OF = {
    AssetClass.STOCK: "AAPL",
    AssetClass.ETF: "SPY",
    AssetClass.CRYPTO: "X:BTCUSD",
    AssetClass.FOREX: "C:EURUSD",
    AssetClass.INDEX: "I:SPX",
}


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def ny_ms(text: str) -> int:
    """'2024-11-29 09:30' in New York -> epoch ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).timestamp() * 1000)


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp() * 1000)


@pytest.fixture(scope="module")
def calendar() -> SessionCalendar:
    return SessionCalendar()


@pytest.fixture
def provider(calendar: SessionCalendar) -> DemoProvider:
    return DemoProvider(calendar, clock=FakeClock(LATE_2025))


def assert_bit_identical(a: Bars, b: Bars) -> None:
    assert len(a) == len(b)
    for name in BAR_FIELDS:
        # Compare bit patterns: exact floats, and NaN where NaN.
        assert np.array_equal(getattr(a, name).view(np.int64), getattr(b, name).view(np.int64)), (
            name
        )


def test_demo_provider_is_a_provider_labelled_synthetic(provider: DemoProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "demo"
    assert provider.synthetic is True


@pytest.mark.parametrize(
    ("series", "start", "end"),
    [
        (AAPL_1D, "2015-01-01", "2025-01-01"),
        (Series("I:SPX", AssetClass.INDEX, Timeframe.D1), "2015-01-01", "2025-01-01"),
        (Series("SPY", AssetClass.ETF, Timeframe.W1), "2015-01-01", "2025-01-01"),
        (BTC_1D, "2015-01-01", "2025-01-01"),
        (Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.M1), "2024-03-08", "2024-03-12"),
        (Series("AAPL", AssetClass.STOCK, Timeframe.M5), "2024-10-25", "2024-12-05"),
        (Series("C:EURUSD", AssetClass.FOREX, Timeframe.H1), "2024-01-01", "2024-04-01"),
    ],
    ids=str,
)
async def test_bars_are_bit_identical_however_the_range_is_split(
    calendar: SessionCalendar, series: Series, start: str, end: str
) -> None:
    start_ms, end_ms = utc_date_ms(start), utc_date_ms(end)
    whole = await DemoProvider(calendar, clock=FakeClock(LATE_2025)).fetch_bars(
        series, start_ms, end_ms
    )
    # A second instance, so nothing cached from the first fetch can make the pieces agree.
    pieces_provider = DemoProvider(calendar, clock=FakeClock(LATE_2025))
    cuts = np.unique(np.random.default_rng(7).integers(start_ms + 1, end_ms, 99))
    bounds = [start_ms, *cuts.tolist(), end_ms + 1]
    pieces = [
        await pieces_provider.fetch_bars(series, lo, hi - 1)
        for lo, hi in itertools.pairwise(bounds)
    ]
    assert len(whole) > 50 and len(pieces) > 90
    assert_bit_identical(whole, Bars.concat(pieces))


async def test_symbols_and_seeds_give_different_paths(calendar: SessionCalendar) -> None:
    start, end = utc_date_ms("2023-01-01"), utc_date_ms("2024-01-01")
    clock = FakeClock(LATE_2025)
    aapl = await DemoProvider(calendar, clock=clock).fetch_bars(AAPL_1D, start, end)
    msft = await DemoProvider(calendar, clock=clock).fetch_bars(
        Series("MSFT", AssetClass.STOCK, Timeframe.D1), start, end
    )
    aapl_seed_1 = await DemoProvider(calendar, seed=1, clock=clock).fetch_bars(AAPL_1D, start, end)
    aapl_again = await DemoProvider(calendar, clock=clock).fetch_bars(AAPL_1D, start, end)

    def returns(bars: Bars) -> np.ndarray:
        return np.diff(np.log(bars.close))

    assert np.array_equal(aapl.ts, msft.ts)
    assert abs(np.corrcoef(returns(aapl), returns(msft))[0, 1]) < 0.3
    assert abs(np.corrcoef(returns(aapl), returns(aapl_seed_1))[0, 1]) < 0.3
    assert_bit_identical(aapl, aapl_again)


@pytest.mark.parametrize("asset_class", list(AssetClass))
@pytest.mark.parametrize("timeframe", list(Timeframe))
async def test_every_bar_is_ohlc_consistent(
    provider: DemoProvider, asset_class: AssetClass, timeframe: Timeframe
) -> None:
    days = 3 if timeframe is Timeframe.M1 else 20 if timeframe.is_intraday else 730
    start = utc_date_ms("2024-02-26")
    end = start + days * MS_PER_DAY
    bars = await provider.fetch_bars(
        Series(SYMBOL_OF[asset_class], asset_class, timeframe), start, end
    )

    assert len(bars) > 0
    assert np.all(np.diff(bars.ts) > 0) and bars.ts[0] >= start and bars.ts[-1] <= end
    prices = np.stack([bars.open, bars.high, bars.low, bars.close])
    assert np.all(np.isfinite(prices)) and np.all(prices > 0)
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.mean(bars.high > bars.low) > 0.5  # most bars have a range (a cent can hide one)
    if asset_class is AssetClass.INDEX:
        return
    assert np.all(bars.volume > 0)
    assert np.all((bars.low <= bars.vwap) & (bars.vwap <= bars.high))
    assert np.all(bars.trades >= 0) and np.array_equal(bars.trades, np.round(bars.trades))


async def test_index_bars_have_no_volume_vwap_or_trades(provider: DemoProvider) -> None:
    spx = Series("I:SPX", AssetClass.INDEX, Timeframe.D1)
    bars = await provider.fetch_bars(spx, utc_date_ms("2024-01-01"), utc_date_ms("2024-03-01"))
    assert len(bars) > 30
    assert np.all(np.isnan(bars.volume)) and np.all(np.isnan(bars.vwap))
    assert np.all(np.isnan(bars.trades))
    assert np.all(np.isfinite(bars.close))


async def test_stock_daily_bars_are_exactly_the_nyse_sessions(
    provider: DemoProvider, calendar: SessionCalendar
) -> None:
    start, end = utc_date_ms("2024-06-15"), utc_date_ms("2024-07-12")
    bars = await provider.fetch_bars(AAPL_1D, start, end)
    assert np.array_equal(bars.ts, calendar.sessions(start, end).day)
    assert ny_ms("2024-07-04 00:00") not in bars.ts  # Independence Day
    assert ny_ms("2024-06-19 00:00") not in bars.ts  # Juneteenth
    assert ny_ms("2024-07-05 00:00") in bars.ts
    assert ny_ms("2024-07-06 00:00") not in bars.ts  # a Saturday


async def test_crypto_daily_bars_include_weekends_and_forex_only_weekdays(
    provider: DemoProvider,
) -> None:
    start, end = utc_date_ms("2024-02-20"), utc_date_ms("2024-04-10")  # across the March DST change
    crypto = await provider.fetch_bars(BTC_1D, start, end)
    forex = await provider.fetch_bars(EURUSD_1D, start, end)
    assert np.array_equal(crypto.ts, calendar_days(start, end))
    assert np.array_equal(forex.ts, calendar_days(start, end, weekdays_only=True))
    saturday = ny_ms("2024-03-09 00:00")
    assert saturday in crypto.ts and saturday not in forex.ts
    # Crypto trades around the clock: each day opens where the previous one closed.
    assert np.array_equal(crypto.open[1:], crypto.close[:-1])


@pytest.mark.parametrize(
    "series",
    [
        AAPL_1D,
        Series("SPY", AssetClass.ETF, Timeframe.D1),
        BTC_1D,
        EURUSD_1D,
        Series("X:ETHUSD", AssetClass.CRYPTO, Timeframe.M15),
    ],
    ids=str,
)
async def test_a_demo_series_has_no_gap_against_the_quality_calendar(
    provider: DemoProvider, calendar: SessionCalendar, series: Series
) -> None:
    start, end = utc_date_ms("2023-10-01"), utc_date_ms("2024-04-01")
    bars = await provider.fetch_bars(series, start, end)
    expected = calendar.expected_bar_starts(series, start, end)
    assert expected is not None
    assert np.array_equal(bars.ts, expected)


async def test_intraday_stock_sessions_all_have_bars(
    provider: DemoProvider, calendar: SessionCalendar
) -> None:
    series = Series("AAPL", AssetClass.STOCK, Timeframe.H4)
    start, end = utc_date_ms("2023-10-01"), utc_date_ms("2024-04-01")
    bars = await provider.fetch_bars(series, start, end)
    expected = calendar.expected_days(series, start, end)
    assert expected is not None
    session_of_bar = np.searchsorted(expected, bars.ts, side="right") - 1
    assert np.array_equal(np.unique(session_of_bar), np.arange(len(expected)))


async def test_intraday_stock_bars_stay_inside_regular_hours_including_an_early_close(
    provider: DemoProvider, calendar: SessionCalendar
) -> None:
    series = Series("AAPL", AssetClass.STOCK, Timeframe.M5)
    start, end = utc_date_ms("2024-11-25"), utc_date_ms("2024-11-30")
    bars = await provider.fetch_bars(series, start, end)

    sessions = calendar.sessions(start - MS_PER_DAY, end)
    index = np.searchsorted(sessions.open, bars.ts, side="right") - 1
    assert np.all(index >= 0)
    assert np.all((sessions.open[index] <= bars.ts) & (bars.ts < sessions.close[index]))
    friday = bars.ts[(bars.ts >= ny_ms("2024-11-29 00:00")) & (bars.ts < ny_ms("2024-11-30 00:00"))]
    assert friday[0] == ny_ms("2024-11-29 09:30") and friday[-1] == ny_ms("2024-11-29 12:55")
    assert len(friday) == 42  # 09:30-13:00, the day after Thanksgiving
    thanksgiving = (bars.ts >= ny_ms("2024-11-28 00:00")) & (bars.ts < ny_ms("2024-11-29 00:00"))
    assert not thanksgiving.any()
    monday = (bars.ts >= ny_ms("2024-11-25 00:00")) & (bars.ts < ny_ms("2024-11-26 00:00"))
    assert monday.sum() == 78  # a full 09:30-16:00 session


async def test_forex_intraday_pauses_from_friday_to_monday_utc(provider: DemoProvider) -> None:
    series = Series("C:EURUSD", AssetClass.FOREX, Timeframe.H1)
    bars = await provider.fetch_bars(series, utc_ms("2024-07-05 20:00"), utc_ms("2024-07-08 02:00"))
    expected = [utc_ms(f"2024-07-05 {h}:00") for h in (20, 21, 22, 23)]
    expected += [utc_ms(f"2024-07-08 0{h}:00") for h in (0, 1, 2)]
    assert bars.ts.tolist() == expected


async def test_weekly_bars_start_monday_midnight_new_york_and_agree_with_daily_bars(
    provider: DemoProvider,
) -> None:
    start, end = utc_date_ms("2024-08-01"), utc_date_ms("2024-09-30")
    weekly = await provider.fetch_bars(Series("AAPL", AssetClass.STOCK, Timeframe.W1), start, end)
    daily = await provider.fetch_bars(AAPL_1D, start, end + 7 * MS_PER_DAY)

    mondays = [ny_ms(f"2024-{d} 00:00") for d in ("08-05", "08-12", "08-19", "08-26", "09-02")]
    mondays += [ny_ms(f"2024-{d} 00:00") for d in ("09-09", "09-16", "09-23")]
    assert weekly.ts.tolist() == mondays  # Labor Day (09-02) is closed but its week traded
    labor_day_week = (daily.ts >= mondays[4]) & (daily.ts < mondays[5])
    week = daily.take(labor_day_week)
    assert week.ts[0] == ny_ms("2024-09-03 00:00")
    assert weekly.open[4] == week.open[0] and weekly.close[4] == week.close[-1]
    assert weekly.high[4] == week.high.max() and weekly.low[4] == week.low.min()
    assert weekly.volume[4] == pytest.approx(week.volume.sum())


async def test_no_bar_is_returned_before_it_is_complete(calendar: SessionCalendar) -> None:
    clock = FakeClock(utc_ms("2024-03-05 10:07:30"))
    provider = DemoProvider(calendar, clock=clock)
    btc_5m = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.M5)
    start, end = utc_ms("2024-03-05 09:00"), utc_ms("2024-03-05 11:00")

    before = await provider.fetch_bars(btc_5m, start, end)
    assert before.ts[-1] == utc_ms("2024-03-05 10:00")  # the 10:05 bar runs until 10:10
    assert np.all(before.ts + btc_5m.timeframe.ms <= clock.now_ms)

    for series in (AAPL_1D, BTC_1D):
        days = await provider.fetch_bars(series, utc_date_ms("2024-03-01"), clock.now_ms)
        assert days.ts[-1] == ny_ms("2024-03-04 00:00")  # today's day bar is still running
    aapl_1h = Series("AAPL", AssetClass.STOCK, Timeframe.H1)
    assert len(await provider.fetch_bars(aapl_1h, utc_date_ms("2024-03-05"), end)) == 0

    clock.now_ms = utc_ms("2024-03-05 10:10")
    after = await provider.fetch_bars(btc_5m, start, end)
    assert after.ts[-1] == utc_ms("2024-03-05 10:05")
    assert_bit_identical(after.take(slice(0, len(before))), before)  # the past did not change


async def test_every_50000_bars_cost_one_recorded_request(calendar: SessionCalendar) -> None:
    records: list[RequestRecord] = []
    clock = FakeClock(LATE_2025)
    provider = DemoProvider(calendar, sink=records.append, clock=clock)
    series = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.M1)
    start, end = utc_date_ms("2024-01-01"), utc_date_ms("2024-02-05")  # 35 days: 50,401 bars

    needed = provider.requests_needed(series, start, end)
    bars = await provider.fetch_bars(series, start, end)

    assert len(bars) == 35 * 1440 + 1 and needed == 2
    assert len(records) == needed
    assert [r.bars for r in records] == [CHUNK_BARS, len(bars) - CHUNK_BARS]
    for record in records:
        assert (record.provider, record.endpoint, record.status, record.ok) == (
            "demo",
            "demo",
            200,
            True,
        )
        assert (record.symbol, record.timeframe, record.attempt) == ("X:BTCUSD", "1m", 1)
        # The record is stamped with the wall time of the call, not the pinned market time.
        assert record.at_ms > clock.now_ms and record.latency_ms >= 0 and record.error is None

    records.clear()
    assert provider.requests_needed(AAPL_1D, start, end) == 1
    assert len(await provider.fetch_bars(AAPL_1D, start, end)) == 23  # 2024-01-02 .. 02-02
    assert [r.bars for r in records] == [23]


async def test_empty_ranges_return_empty_bars(calendar: SessionCalendar) -> None:
    records: list[RequestRecord] = []
    provider = DemoProvider(calendar, sink=records.append, clock=FakeClock(LATE_2025))
    start = utc_date_ms("2024-07-10")

    assert provider.requests_needed(AAPL_1D, start, start - 1) == 0
    assert len(await provider.fetch_bars(AAPL_1D, start, start - 1)) == 0
    assert records == []

    weekend = await provider.fetch_bars(
        AAPL_1D, ny_ms("2024-07-06 00:00"), ny_ms("2024-07-07 23:00")
    )
    assert len(weekend) == 0 and weekend.ts.dtype == np.int64
    assert [r.bars for r in records] == [0]  # asking still costs a request, as with Polygon
    await provider.aclose()


@pytest.mark.parametrize("asset_class", list(AssetClass))
async def test_daily_log_returns_have_a_plausible_volatility(
    provider: DemoProvider, asset_class: AssetClass
) -> None:
    series = Series(SYMBOL_OF[asset_class], asset_class, Timeframe.D1)
    bars = await provider.fetch_bars(series, utc_date_ms("2015-01-01"), utc_date_ms("2025-01-01"))
    returns = np.diff(np.log(bars.close))
    assert 0.005 <= returns.std() <= 0.05
    assert bars.close.max() / bars.close.min() < 50  # wanders over the years, within reason


async def test_intraday_volume_adds_up_to_about_the_daily_volume(provider: DemoProvider) -> None:
    start, end = utc_date_ms("2024-04-01"), utc_date_ms("2024-05-01")
    daily = await provider.fetch_bars(AAPL_1D, start, end)
    five_minute = await provider.fetch_bars(
        Series("AAPL", AssetClass.STOCK, Timeframe.M5), start, end
    )
    assert 0.5 < five_minute.volume.sum() / daily.volume.sum() < 2.0


# --- the demo's split: GOOGL 20:1 on 2022-07-18 ------------------------------------------------

SPLIT_DAY = utc_date_ms("2022-07-18") + 4 * 3_600_000  # midnight New York (summer time)


@pytest.mark.parametrize("timeframe", [Timeframe.D1, Timeframe.H1, Timeframe.W1])
async def test_bars_before_the_split_are_adjusted_once_it_has_happened(
    calendar: SessionCalendar, timeframe: Timeframe
) -> None:
    googl = Series("GOOGL", AssetClass.STOCK, timeframe)
    start, end = SPLIT_DAY - 30 * MS_PER_DAY, SPLIT_DAY - 1
    raw = await DemoProvider(calendar, clock=lambda: SPLIT_DAY - 1).fetch_bars(googl, start, end)
    adjusted = await DemoProvider(calendar, clock=lambda: SPLIT_DAY + 30 * MS_PER_DAY).fetch_bars(googl, start, end)
    # The week of the split had not ended before it: compare the bars both have.
    adjusted = adjusted.take(np.isin(adjusted.ts, raw.ts))
    assert len(raw) and np.array_equal(raw.ts, adjusted.ts)
    np.testing.assert_array_equal(adjusted.close, np.round(raw.close / 20, 4))
    np.testing.assert_array_equal(adjusted.volume, raw.volume * 20)
    assert (raw.volume == np.round(raw.volume)).all()  # whole shares as traded then
    np.testing.assert_array_equal(adjusted.trades, raw.trades)
    assert (adjusted.low <= np.minimum(adjusted.open, adjusted.close)).all()
    assert ((adjusted.vwap >= adjusted.low) & (adjusted.vwap <= adjusted.high)).all()
    # The adjusted history runs on into the bars after the split without a jump.
    whole = await DemoProvider(calendar, clock=lambda: SPLIT_DAY + 30 * MS_PER_DAY).fetch_bars(
        Series("GOOGL", AssetClass.STOCK, Timeframe.D1), start, SPLIT_DAY + 10 * MS_PER_DAY)
    assert np.abs(np.diff(np.log(whole.close))).max() < 0.2
    # The bars from the split on are the same whenever they are fetched.
    later = SPLIT_DAY + 20 * MS_PER_DAY
    after = [await DemoProvider(calendar, clock=lambda c=c: c).fetch_bars(googl, SPLIT_DAY, later)
             for c in (later + MS_PER_DAY, later + 400 * MS_PER_DAY)]
    assert all(np.array_equal(getattr(after[0], f), getattr(after[1], f), equal_nan=f != "ts") for f in BAR_FIELDS)


async def test_the_split_is_listed_from_its_day_on(calendar: SessionCalendar) -> None:
    before = DemoProvider(calendar, clock=lambda: SPLIT_DAY - 1)
    after = DemoProvider(calendar, clock=lambda: SPLIT_DAY + MS_PER_DAY)
    assert await before.corporate_actions("split", "2022-07-01") == []
    [split] = await after.corporate_actions("split", "2022-07-01")
    assert (split.symbol, split.ex_date, split.ratio, split.describe()) == (
        "GOOGL", "2022-07-18", 20.0, "split 20:1 on 2022-07-18")
    assert await after.corporate_actions("split", "2022-07-19") == []
    assert await after.corporate_actions("dividend", "2022-01-01") == []
