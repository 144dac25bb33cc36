"""The provider contract (``providers/base.py``), held the same way over every provider: the demo
one, and Polygon against the fake Polygon on 127.0.0.1 serving the same bars.

Every provider the registry (``providers/registry.py``) knows is built through it and held to the
Protocol, and each has a subject here. Bars come back ordered, in UTC epoch ms on the timeframe's stamps, with every field; a range
includes both of its ends; every call is reported; a ticker the provider never heard of is said
so; and what a provider declares (grouped daily, reference data) it does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pytest
from fake_polygon import FakePolygon

from enrichctl.calendar import NEW_YORK, SessionCalendar, ny_midnight_ms, utc_date_ms
from enrichctl.domain import BAR_FIELDS, MS_PER_DAY, AssetClass, Bars, Series, Timeframe
from enrichctl.errors import ConfigError, PermanentProviderError
from enrichctl.providers.base import GroupedDailySource, Provider, RequestRecord
from enrichctl.providers.demo import DemoProvider
from enrichctl.providers.polygon import PolygonProvider
from enrichctl.providers.reference import CorporateAction, ReferenceSource, TickerState
from enrichctl.providers.registry import provider_check, provider_create, provider_entry, provider_names
from enrichctl.resilience import ResilienceRegistry
from enrichctl.settings import PolygonSettings, ResilienceSettings, Settings

KEY = "pk_CONTRACT_0b1c2d3e"
NOW = utc_date_ms("2025-06-02") + 12 * 3_600_000  # a Monday, 08:00 New York
START = utc_date_ms("2025-03-03")
INTRADAY_START = utc_date_ms("2025-05-12")
SPLIT = CorporateAction("AAPL", "split", "2025-04-14", ratio=4.0)
UNKNOWN = "ZZQX"

AAPL_1D = Series("AAPL", AssetClass.STOCK, Timeframe.D1)
MSFT_1D = Series("MSFT", AssetClass.STOCK, Timeframe.D1)
AAPL_1H = Series("AAPL", AssetClass.STOCK, Timeframe.H1)
AAPL_1W = Series("AAPL", AssetClass.STOCK, Timeframe.W1)
BTC_1H = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.H1)
EURUSD_1D = Series("C:EURUSD", AssetClass.FOREX, Timeframe.D1)
SERIES = (AAPL_1D, MSFT_1D, AAPL_1H, AAPL_1W, BTC_1H, EURUSD_1D)
IDS = [f"{s.symbol}-{s.timeframe.value}" for s in SERIES]
# The providers the expectations below run over: every registered one.
SUBJECTS = ("demo", "polygon")


def start_of(series: Series) -> int:
    return INTRADAY_START if series.timeframe.is_intraday else START


@dataclass
class Subject:
    """One provider under the contract, what it reported, and what it cannot know."""

    provider: Provider
    records: list[RequestRecord] = field(default_factory=list)
    # A ticker the provider has never heard of; None when it has bars for any ticker.
    unknown_ticker: str | None = None


def demo_with(calendar: SessionCalendar, records: list[RequestRecord] | None = None) -> DemoProvider:
    sink = records.append if records is not None else None
    return DemoProvider(calendar, sink=sink, clock=lambda: NOW, splits=(SPLIT,))


@pytest.fixture(params=SUBJECTS)
async def subject(request: pytest.FixtureRequest, calendar: SessionCalendar) -> AsyncIterator[Subject]:
    if request.param == "demo":
        records: list[RequestRecord] = []
        provider = demo_with(calendar, records)
        yield Subject(provider, records)
        await provider.aclose()
        return
    async with FakePolygon(api_key=KEY) as fake:
        source = demo_with(calendar)
        for series in SERIES:
            await fake.hold_from(source, series, start_of(series), NOW)
        fake.splits = [{"ticker": "AAPL", "execution_date": SPLIT.ex_date,
                        "split_from": 1, "split_to": 4}]
        records = []
        polygon = PolygonProvider(
            PolygonSettings(api_key=KEY, base_url=fake.url, requests_per_minute=0),
            calendar, sink=records.append, registry=ResilienceRegistry(),
            resilience=ResilienceSettings(retry_initial_delay=0.01, retry_max_delay=0.02),
        )
        try:
            yield Subject(polygon, records, unknown_ticker=UNKNOWN)
        finally:
            await polygon.aclose()


async def bars_of(subject: Subject, series: Series) -> Bars:
    return await subject.provider.fetch_bars(series, start_of(series), NOW)


# -- the Protocol ------------------------------------------------------------------------------


def test_is_a_provider_that_declares_what_it_can_do(subject: Subject) -> None:
    p = subject.provider
    assert isinstance(p, Provider)
    assert isinstance(p.name, str) and p.name
    assert isinstance(p.synthetic, bool)
    assert isinstance(p.supports_grouped_daily, bool) and isinstance(p.supports_reference, bool)
    assert isinstance(p, GroupedDailySource) is p.supports_grouped_daily
    assert isinstance(p, ReferenceSource) is p.supports_reference


def test_every_registered_provider_is_a_subject_of_this_suite() -> None:
    assert set(SUBJECTS) == set(provider_names())


@pytest.mark.parametrize("name", provider_names())
async def test_every_registered_provider_builds_one_that_satisfies_the_protocol(
    name: str, calendar: SessionCalendar
) -> None:
    entry = provider_entry(name)
    async with FakePolygon(api_key=KEY) as fake:
        await fake.hold_from(demo_with(calendar), AAPL_1D, START, NOW)
        settings = Settings(provider=name, polygon={"api_key": KEY, "base_url": fake.url,
                                                    "requests_per_minute": 0})
        if entry.section is not None:
            assert isinstance(getattr(settings, entry.section), entry.settings_model)
        records: list[RequestRecord] = []
        p = provider_create(settings, calendar, records.append, clock=lambda: NOW,
                            registry=ResilienceRegistry())
        try:
            assert isinstance(p, Provider) and p.name == name
            assert isinstance(p, GroupedDailySource) is p.supports_grouped_daily
            assert isinstance(p, ReferenceSource) is p.supports_reference
            assert len(await p.fetch_bars(AAPL_1D, START, NOW)) > 0
            assert records and all(r.provider == name for r in records)
        finally:
            await p.aclose()
    if entry.key_check is not None:  # a provider that needs a key says what to set without one
        blank = Settings(provider=name, polygon={"api_key": ""})
        with pytest.raises(ConfigError, match="set "):
            provider_check(blank)


# -- bars --------------------------------------------------------------------------------------


@pytest.mark.parametrize("series", SERIES, ids=IDS)
async def test_bars_are_ordered_and_inside_the_range(subject: Subject, series: Series) -> None:
    bars = await bars_of(subject, series)
    assert len(bars) > 0
    assert np.all(np.diff(bars.ts) > 0), "ascending, each bar once"
    assert bars.ts[0] >= start_of(series) and bars.ts[-1] <= NOW


@pytest.mark.parametrize("series", SERIES, ids=IDS)
async def test_bars_are_utc_epoch_ms_on_the_timeframes_stamps(subject: Subject, series: Series) -> None:
    bars = await bars_of(subject, series)
    assert bars.ts.dtype == np.int64
    ts = bars.ts.tolist()
    if series.timeframe is Timeframe.D1:
        # Midnight New York of each day, every asset class (Polygon's day bars).
        assert all(ny_midnight_ms(t) == t for t in ts)
    elif series.timeframe is Timeframe.W1:
        assert all(ny_midnight_ms(t) == t and _ny(t).weekday() == 0 for t in ts)
    else:
        assert all(t % series.timeframe.ms == 0 for t in ts)
    if series.asset_class is AssetClass.STOCK and series.timeframe is Timeframe.D1:
        sessions = SessionCalendar().sessions(START, NOW).day
        assert set(ts) <= set(sessions.tolist()), "stock day bars fall on NYSE sessions"


@pytest.mark.parametrize("series", SERIES, ids=IDS)
async def test_bars_have_every_field_and_consistent_prices(subject: Subject, series: Series) -> None:
    bars = await bars_of(subject, series)
    for name in BAR_FIELDS:
        column = getattr(bars, name)
        assert column.shape == (len(bars),), name
    for name in ("open", "high", "low", "close"):
        column = getattr(bars, name)
        assert column.dtype == np.float64 and np.all(np.isfinite(column)) and np.all(column > 0), name
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.volume >= 0)


@pytest.mark.parametrize("series", [AAPL_1D, AAPL_1H, BTC_1H], ids=["AAPL-1d", "AAPL-1h", "BTC-1h"])
async def test_a_range_includes_both_of_its_ends(subject: Subject, series: Series) -> None:
    whole = await bars_of(subject, series)
    first, last = int(whole.ts[3]), int(whole.ts[8])
    inside = await subject.provider.fetch_bars(series, first, last)
    assert inside.ts.tolist() == whole.ts[3:9].tolist()
    np.testing.assert_array_equal(inside.close, whole.close[3:9])
    one = await subject.provider.fetch_bars(series, first, first)
    assert one.ts.tolist() == [first]
    between = await subject.provider.fetch_bars(series, first + 1, int(whole.ts[4]) - 1)
    assert len(between) == 0


@pytest.mark.parametrize("series", [AAPL_1D, AAPL_1H], ids=["AAPL-1d", "AAPL-1h"])
async def test_every_call_is_reported_and_costs_what_was_planned(subject: Subject, series: Series) -> None:
    planned = subject.provider.requests_needed(series, start_of(series), NOW)
    subject.records.clear()
    bars = await bars_of(subject, series)
    assert len(subject.records) == planned >= 1
    assert all(r.provider == subject.provider.name and r.ok for r in subject.records)
    assert {r.symbol for r in subject.records} == {series.symbol}
    assert sum(r.bars for r in subject.records) == len(bars)


async def test_an_unknown_ticker_has_no_bars_and_is_said_to_be_unknown(subject: Subject) -> None:
    if subject.unknown_ticker is None:
        pytest.skip(f"{subject.provider.name} synthesises bars for any ticker: none is unknown")
    series = Series(subject.unknown_ticker, AssetClass.STOCK, Timeframe.D1)
    try:
        bars = await subject.provider.fetch_bars(series, START, NOW)
    except PermanentProviderError:
        pass  # a 404 is as good as no bars: the job fails either way
    else:
        assert len(bars) == 0
    assert subject.provider.supports_reference, "without reference data nothing can tell"
    assert await subject.provider.ticker_state(subject.unknown_ticker) is TickerState.UNKNOWN


# -- what a provider declares ------------------------------------------------------------------


async def test_grouped_daily_is_the_same_day_bars_for_the_asked_tickers(subject: Subject) -> None:
    p = subject.provider
    if not p.supports_grouped_daily:
        pytest.skip(f"{p.name} does not declare grouped daily bars")
    days = p.grouped_days(utc_date_ms("2025-05-23"), utc_date_ms("2025-05-28"))
    assert days == ["2025-05-23", "2025-05-27"]  # Memorial Day and the weekend have no session
    grouped = await p.fetch_grouped_daily("2025-05-27", symbols={"AAPL", "MSFT", UNKNOWN})
    assert set(grouped) == {"AAPL", "MSFT"}
    midnight = int(datetime(2025, 5, 27, tzinfo=NEW_YORK).timestamp() * 1000)
    for series in (AAPL_1D, MSFT_1D):
        one = grouped[series.symbol]
        single = await p.fetch_bars(series, midnight, midnight + MS_PER_DAY - 1)
        assert one.ts.tolist() == single.ts.tolist() == [midnight]
        for name in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(getattr(one, name), getattr(single, name), err_msg=name)
    assert await p.fetch_grouped_daily("2025-05-26") == {}  # a holiday: no bars, no error


async def test_reference_data_lists_the_splits_since_a_date_and_knows_a_listed_ticker(
    subject: Subject,
) -> None:
    p = subject.provider
    if not p.supports_reference:
        pytest.skip(f"{p.name} does not declare reference data")
    assert await p.corporate_actions("split", "2025-01-01") == [SPLIT]
    assert await p.corporate_actions("split", "2025-04-15") == []
    dividends = await p.corporate_actions("dividend", "2025-01-01")
    assert all(a.kind == "dividend" and a.amount is not None for a in dividends)
    assert await p.ticker_state("AAPL") is TickerState.ACTIVE


def _ny(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, NEW_YORK)
