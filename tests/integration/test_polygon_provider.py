"""The Polygon provider against a fake Polygon on 127.0.0.1: wire format, paging, chunking, errors,
the resilience stack, the quota, and the key that must never leak."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest
from fake_polygon import FakePolygon

from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import BAR_FIELDS, MS_PER_DAY, AssetClass, Bars, Series, Timeframe
from enrichctl.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderAuthError,
    RetryableProviderError,
)
from enrichctl.providers.base import Provider, RequestRecord
from enrichctl.providers.demo import DemoProvider
from enrichctl.providers.polygon import PolygonProvider
from enrichctl.resilience import CircuitOpen, ResilienceRegistry
from enrichctl.settings import PolygonSettings, ResilienceSettings

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "polygon"
KEY = "pk_LEAKCHECK_7f3a9c2e"
NOW = utc_date_ms("2025-06-02") + 12 * 3_600_000  # a Monday, 08:00 New York
FAST = {"retry_initial_delay": 0.01, "retry_max_delay": 0.02, "retry_max_retries": 3}

AAPL_1D = Series("AAPL", AssetClass.STOCK, Timeframe.D1)
AAPL_1M = Series("AAPL", AssetClass.STOCK, Timeframe.M1)
BTC_5M = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.M5)
NDX_1D = Series("I:NDX", AssetClass.INDEX, Timeframe.D1)


def fixture(name: str) -> dict[str, Any]:
    return json.loads(next(REFERENCE.rglob(name)).read_text())


@pytest.fixture(scope="module")
def calendar() -> SessionCalendar:
    return SessionCalendar()


@pytest.fixture
def demo(calendar: SessionCalendar) -> DemoProvider:
    return DemoProvider(calendar, clock=lambda: NOW)


@pytest.fixture
async def fake() -> AsyncIterator[FakePolygon]:
    async with FakePolygon(api_key=KEY) as server:
        yield server


class Client:
    """A provider on the fake server and everything it reported."""

    def __init__(self, fake: FakePolygon, calendar: SessionCalendar, *, key: str = KEY,
                 rpm: int = 0, rate_interval: float = 60.0, rate_margin: float = 0.02,
                 timeout: float = 5.0, read_timeout: float = 10.0, **resilience: Any) -> None:
        self.records: list[RequestRecord] = []
        self.registry = ResilienceRegistry()
        settings = PolygonSettings(api_key=key, base_url=fake.url, requests_per_minute=rpm,
                                   timeout_seconds=timeout, read_timeout_seconds=read_timeout)
        self.provider = PolygonProvider(
            settings, calendar, sink=self.records.append, registry=self.registry,
            resilience=ResilienceSettings(**{**FAST, **resilience}), rate_interval=rate_interval,
            rate_margin=rate_margin,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.provider.aclose()


@pytest.fixture
async def client(fake: FakePolygon, calendar: SessionCalendar) -> AsyncIterator[Client]:
    async with Client(fake, calendar) as c:
        yield c


def assert_same_bars(got: Bars, want: Bars) -> None:
    assert len(got) == len(want)
    for name in BAR_FIELDS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


# -- the wire format of every reference fixture ------------------------------------------------


async def test_is_a_provider(client: Client) -> None:
    assert isinstance(client.provider, Provider)
    assert client.provider.name == "polygon" and client.provider.synthetic is False


@pytest.mark.parametrize("base_url", ["api.polygon.io", "ftp://api.polygon.io", "https://"])
def test_a_base_url_that_is_not_http_is_a_configuration_error(
    calendar: SessionCalendar, base_url: str
) -> None:
    with pytest.raises(ConfigError, match="polygon.base_url"):
        PolygonProvider(PolygonSettings(api_key=KEY, base_url=base_url), calendar)


async def test_parses_the_recorded_aapl_day_bars(fake: FakePolygon, client: Client) -> None:
    fake.canned("AAPL", fixture("v2_aggs_ticker_AAPL_range_1_day_2005-04-01_2005-04-04.json"))
    bars = await client.provider.fetch_bars(AAPL_1D, utc_date_ms("2005-04-01"), utc_date_ms("2005-04-05"))
    assert bars.ts.tolist() == [1112331600000, 1112587200000]  # midnight New York
    assert bars.open.tolist() == [1.5032, 1.4639] and bars.close.tolist() == [1.4604, 1.4675]
    assert bars.high.tolist() == [1.5064, 1.4754] and bars.low.tolist() == [1.4489, 1.4343]
    assert bars.volume.tolist() == [642646396.0, 578172308.0]
    assert bars.vwap.tolist() == [1.469, 1.4589] and bars.trades.tolist() == [82132, 65543]
    assert [(r.endpoint, r.status, r.ok, r.bars) for r in client.records] == [("aggs", 200, True, 2)]


@pytest.mark.parametrize(
    ("name", "series", "first"),
    [
        ("crypto_custom_bars_X-BTCUSD_1_day.json",
         Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.D1), (1590984000000, 9557.9, 303067.6562332156, 1)),
        ("forex_custom_bars_C-EURUSD.json",
         Series("C:EURUSD", AssetClass.FOREX, Timeframe.D1), (1626912000000, 1.17921, 125329, 125329)),
    ],
)
async def test_parses_crypto_and_forex_bars(
    fake: FakePolygon, client: Client, name: str, series: Series, first: tuple
) -> None:
    body = fixture(name)
    fake.canned(series.symbol, body)
    bars = await client.provider.fetch_bars(series, 0, NOW)
    assert len(bars) == len(body["results"])
    assert (int(bars.ts[0]), bars.open[0], bars.volume[0], bars.trades[0]) == first
    assert fake.requests[0].path.startswith(f"/v2/aggs/ticker/{series.symbol}/range/1/day/")


async def test_index_bars_have_no_volume_fields(fake: FakePolygon, client: Client) -> None:
    fake.canned("I:NDX", fixture("indices_custom_bars_I-NDX__no_volume_fields.json"))
    bars = await client.provider.fetch_bars(NDX_1D, 0, NOW)
    assert bars.ts.tolist() == [1678341600000, 1678428000000]
    assert bars.close[0] == pytest.approx(11995.88235998666)
    assert np.isnan(bars.volume).all() and np.isnan(bars.vwap).all() and np.isnan(bars.trades).all()


async def test_follows_next_url_on_our_own_host_without_a_key_in_it(fake: FakePolygon, client: Client) -> None:
    page1 = fixture("stocks_custom_bars_AAPL_1_day__with_next_url.json")
    assert page1["next_url"].startswith("https://api.massive.com/")  # someone else's host
    page2 = {**page1, "results": [{**page1["results"][1], "t": 1578114000000}]}
    del page2["next_url"]
    fake.canned("AAPL", page1, page2)
    bars = await client.provider.fetch_bars(AAPL_1D, utc_date_ms("2020-01-01"), utc_date_ms("2020-01-10"))
    assert bars.ts.tolist() == [1577941200000, 1578027600000, 1578114000000]
    second = fake.requests[1]
    assert second.path == "/v2/aggs/ticker/AAPL/range/1/day/1578114000000/2020-01-10"
    assert second.query_string == "cursor=bGltaXQ9MiZzb3J0PWFzYw"
    assert second.headers["Authorization"] == f"Bearer {KEY}"


async def test_no_results_key_means_no_bars_and_delayed_is_fine(fake: FakePolygon, client: Client) -> None:
    fake.canned("AAPL", {"ticker": "AAPL", "queryCount": 0, "resultsCount": 0, "adjusted": True,
                         "status": "DELAYED", "request_id": "x"})
    bars = await client.provider.fetch_bars(AAPL_1D, 0, NOW)
    assert len(bars) == 0 and client.records[0].ok


async def test_bars_outside_the_range_are_passed_on_for_the_quality_check(
    fake: FakePolygon, client: Client
) -> None:
    """check_batch drops and records them; the provider must not hide them."""
    body = fixture("v2_aggs_ticker_AAPL_range_1_day_2005-04-01_2005-04-04.json")
    fake.canned("AAPL", body)
    bars = await client.provider.fetch_bars(AAPL_1D, 1112331600000, 1112331600000)
    assert bars.ts.tolist() == [1112331600000, 1112587200000]


async def test_grouped_daily_fixture_is_stamped_midnight_new_york_of_the_day(
    fake: FakePolygon, client: Client
) -> None:
    fake.canned_grouped("2005-04-04", fixture("v2_aggs_grouped_locale_us_market_stocks_2005-04-04__adjusted=true.json"))
    fake.canned_grouped("2020-10-14", fixture("stocks_grouped_daily.json"))
    one = await client.provider.fetch_grouped_daily("2005-04-04")
    assert list(one) == ["GIK"]
    assert one["GIK"].ts.tolist() == [1112587200000]  # 2005-04-04 00:00 New York, not 16:00
    assert (one["GIK"].open[0], one["GIK"].close[0], one["GIK"].trades[0]) == (9.99, 10.02, 96)
    some = await client.provider.fetch_grouped_daily("2020-10-14", symbols={"VSAT", "TANH", "NOPE"})
    assert sorted(some) == ["TANH", "VSAT"] and some["VSAT"].volume[0] == 312583
    assert fake.paths() == ["/v2/aggs/grouped/locale/us/market/stocks/2005-04-04",
                            "/v2/aggs/grouped/locale/us/market/stocks/2020-10-14"]
    assert [(r.endpoint, r.symbol, r.bars) for r in client.records] == [("grouped", None, 1), ("grouped", None, 3)]


async def test_grouped_daily_serves_a_whole_market_in_one_request(
    fake: FakePolygon, client: Client, demo: DemoProvider
) -> None:
    start = NOW - 10 * MS_PER_DAY
    symbols = [f"S{i:03d}" for i in range(40)]
    held = {s: await fake.hold_from(demo, Series(s, AssetClass.STOCK, Timeframe.D1), start, NOW)
            for s in symbols}
    day = client.provider.grouped_days(NOW - 5 * MS_PER_DAY, NOW - MS_PER_DAY)[-1]
    assert day == "2025-05-30"  # the last session before Monday
    grouped = await client.provider.fetch_grouped_daily(day)
    assert sorted(grouped) == symbols
    for s in symbols:
        assert_same_bars(grouped[s], held[s].take(slice(-1, None)))
    assert len(fake.requests) == 1
    assert client.provider.grouped_requests_needed([day, day]) == 1


# -- paging and chunking ---------------------------------------------------------------------


async def test_pages_are_followed_until_next_url_is_absent(
    calendar: SessionCalendar, demo: DemoProvider
) -> None:
    async with FakePolygon(api_key=KEY, page_size=7) as fake:
        held = await fake.hold_from(demo, AAPL_1D, NOW - 90 * MS_PER_DAY, NOW)
        async with Client(fake, calendar) as c:
            bars = await c.provider.fetch_bars(AAPL_1D, NOW - 90 * MS_PER_DAY, NOW)
    assert_same_bars(bars, held)
    assert len(fake.requests) == math.ceil(len(held) / 7) == len(c.records)
    assert all("cursor=" in r.query_string for r in fake.requests[1:])
    assert sum(r.bars for r in c.records) == len(held)


async def test_long_intraday_ranges_are_split_into_chunks_the_api_serves(
    fake: FakePolygon, client: Client, demo: DemoProvider
) -> None:
    # 40 days of 5-minute crypto bars are 57,600 base minutes: one request would be cut at 50,000.
    start = NOW - 40 * MS_PER_DAY
    held = await fake.hold_from(demo, BTC_5M, start, NOW)
    assert len(held) > 10_000
    bars = await client.provider.fetch_bars(BTC_5M, start, NOW)
    assert_same_bars(bars.sorted(), held)
    assert len(fake.requests) == client.provider.requests_needed(BTC_5M, start, NOW) == 2


def test_stock_minute_chunks_hold_at_most_52_sessions_and_tile_the_range(
    client: Client, calendar: SessionCalendar
) -> None:
    start, end = utc_date_ms("2024-01-01"), utc_date_ms("2025-01-01")
    chunks = client.provider.chunks(AAPL_1M, start, end)
    assert chunks[0][0] == start and chunks[-1][1] == end
    assert all(b + 1 == c for (_, b), (c, _) in pairwise(chunks))
    assert max(len(calendar.sessions(a, b).day) for a, b in chunks) <= 52
    assert len(chunks) == math.ceil(len(calendar.sessions(start, end).day) / 52) == 5
    assert client.provider.requests_needed(AAPL_1D, start, end) == 1
    assert client.provider.requests_needed(AAPL_1D, end, start) == 0


async def test_stock_minute_bars_over_many_sessions_arrive_whole(
    fake: FakePolygon, client: Client, demo: DemoProvider
) -> None:
    start = NOW - 90 * MS_PER_DAY
    held = await fake.hold_from(demo, AAPL_1M, start, NOW)
    bars = await client.provider.fetch_bars(AAPL_1M, start, NOW)
    assert_same_bars(bars, held)
    assert len(fake.requests) == 2


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["not_authorized", "error"])
async def test_a_refused_key_is_a_configuration_error_and_not_retried(
    calendar: SessionCalendar, shape: str
) -> None:
    async with (
        FakePolygon(api_key=KEY, auth_error=shape) as fake,
        Client(fake, calendar, key="pk_wrong") as c,
    ):
        with pytest.raises(ProviderAuthError, match="refused the API key"):
            await c.provider.fetch_bars(AAPL_1D, 0, NOW)
    assert len(fake.requests) == 1
    assert [(r.status, r.ok) for r in c.records] == [(401, False)]


@pytest.mark.parametrize(
    ("status", "error"),
    [(403, ProviderAuthError), (404, PermanentProviderError), (400, PermanentProviderError)],
)
async def test_statuses_that_retrying_cannot_fix_are_not_retried(
    fake: FakePolygon, client: Client, status: int, error: type[Exception]
) -> None:
    fake.fail_next(status, status)
    with pytest.raises(error):
        await client.provider.fetch_bars(AAPL_1D, 0, NOW)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("how", ["429", "500", "timeout", "garbage", "cut"])
async def test_transient_failures_are_retryable(
    fake: FakePolygon, calendar: SessionCalendar, how: str
) -> None:
    if how in ("429", "500"):
        fake.fail_next(int(how), retry_after="0.05")
    elif how == "timeout":
        fake.slow = 0.5
    else:
        fake.break_next(how)
    async with Client(fake, calendar, timeout=0.1, retry_max_retries=0) as c:
        with pytest.raises(RetryableProviderError) as caught:
            await c.provider.fetch_bars(AAPL_1D, 0, NOW)
    expected_status = {"429": 429, "500": 500, "timeout": None, "garbage": 200, "cut": 200}[how]
    assert caught.value.status == expected_status
    assert [(r.status, r.ok, r.attempt) for r in c.records] == [(expected_status, False, 1)]
    if how == "429":
        assert caught.value.retry_after == pytest.approx(0.05)


async def test_a_slow_provider_that_keeps_sending_is_not_cut_off(
    fake: FakePolygon, calendar: SessionCalendar, demo: DemoProvider
) -> None:
    """Its first byte after 0.3 s, then the body over 1.2 s in pieces: longer than the 0.5 s read
    timeout in all, but never silent for that long, so it is one successful request."""
    held = await fake.hold_from(demo, AAPL_1D, NOW - 300 * MS_PER_DAY, NOW)
    fake.slow, fake.trickle = 0.3, (0.15, 8)
    async with Client(fake, calendar, timeout=5.0, read_timeout=0.5, retry_max_retries=0) as c:
        started = time.monotonic()
        bars = await c.provider.fetch_bars(AAPL_1D, NOW - 300 * MS_PER_DAY, NOW)
        took = time.monotonic() - started
    assert_same_bars(bars, held)
    assert took > 1.2 and [(r.status, r.ok) for r in c.records] == [(200, True)]


async def test_silence_is_cut_at_the_read_timeout_not_at_the_whole_request_bound(
    fake: FakePolygon, calendar: SessionCalendar
) -> None:
    fake.slow = 3.0
    async with Client(fake, calendar, timeout=30.0, read_timeout=0.3, retry_max_retries=0) as c:
        started = time.monotonic()
        with pytest.raises(RetryableProviderError) as caught:
            await c.provider.fetch_bars(AAPL_1D, 0, NOW)
        took = time.monotonic() - started
    hostport = fake.url.removeprefix("http://")
    assert caught.value.message == f"no answer from {hostport} within 0.3 s"
    assert caught.value.status is None and took < 2.0, took
    assert [(r.status, r.error) for r in c.records] == [(None, caught.value.message)]


async def test_a_body_that_stops_arriving_says_so(
    fake: FakePolygon, calendar: SessionCalendar, demo: DemoProvider
) -> None:
    """The head came (the provider is there), then the body stalled: a retryable failure that
    does not make the provider look unreachable."""
    await fake.hold_from(demo, AAPL_1D, NOW - 30 * MS_PER_DAY, NOW)
    fake.trickle = (1.0, 2)
    async with Client(fake, calendar, read_timeout=0.3, retry_max_retries=0) as c:
        with pytest.raises(RetryableProviderError) as caught:
            await c.provider.fetch_bars(AAPL_1D, NOW - 30 * MS_PER_DAY, NOW)
    hostport = fake.url.removeprefix("http://")
    assert caught.value.message == f"{hostport} stopped sending its answer for 0.3 s"
    assert caught.value.status == 200


async def test_a_5xx_burst_is_ridden_out_by_the_retries(
    fake: FakePolygon, client: Client, demo: DemoProvider
) -> None:
    held = await fake.hold_from(demo, AAPL_1D, NOW - 30 * MS_PER_DAY, NOW)
    fake.fail_next(503, 502, 500)
    bars = await client.provider.fetch_bars(AAPL_1D, NOW - 30 * MS_PER_DAY, NOW)
    assert_same_bars(bars, held)
    assert [(r.status, r.attempt) for r in client.records] == [(503, 1), (502, 2), (500, 3), (200, 4)]
    status = client.provider.resilience_status()
    assert status["retry_policies"]["polygon"]["retries"] == 3
    assert status["circuit_breakers"]["polygon"]["state"] == "closed"


async def test_an_open_breaker_ends_the_retries_without_calling(
    fake: FakePolygon, calendar: SessionCalendar
) -> None:
    fake.fail_next(*[503] * 10)
    async with Client(fake, calendar, retry_max_retries=8, minimum_calls=2, window_size=2) as c:
        with pytest.raises(CircuitOpen):
            await c.provider.fetch_bars(AAPL_1D, 0, NOW)
    assert len(fake.requests) == 2 == len(c.records)
    assert c.provider.resilience_status()["circuit_breakers"]["polygon"]["state"] == "open"


# -- the quota -------------------------------------------------------------------------------


async def test_a_429_pauses_every_caller_until_retry_after(
    fake: FakePolygon, client: Client, demo: DemoProvider
) -> None:
    other = Series("MSFT", AssetClass.STOCK, Timeframe.D1)
    for s in (AAPL_1D, other):
        await fake.hold_from(demo, s, NOW - 30 * MS_PER_DAY, NOW)
    fake.fail_next(429, retry_after="0.4")
    first = asyncio.create_task(client.provider.fetch_bars(AAPL_1D, NOW - 30 * MS_PER_DAY, NOW))
    while not fake.requests:
        await asyncio.sleep(0.005)
    second = await client.provider.fetch_bars(other, NOW - 30 * MS_PER_DAY, NOW)
    assert len(await first) == len(second) > 0
    rejected_at = fake.requests[0].at
    assert fake.requests[0].status == 429
    assert all(r.at - rejected_at >= 0.39 for r in fake.requests[1:])  # MSFT waited too
    assert client.provider.resilience_status()["rate_limiters"]["polygon"]["pauses"] == 1


async def test_the_configured_quota_is_never_exceeded_in_any_window(
    calendar: SessionCalendar, demo: DemoProvider
) -> None:
    rate, window = 3, 0.6
    async with FakePolygon(api_key=KEY, budget=rate, window=window) as fake:
        series = [Series(f"S{i}", AssetClass.STOCK, Timeframe.D1) for i in range(9)]
        for s in series:
            await fake.hold_from(demo, s, NOW - 20 * MS_PER_DAY, NOW)
        # The server counts arrivals, the limiter admissions; in production 2 % of a minute covers
        # the gap, here a 20 % margin (120 ms) covers a test machine starved of CPU. 429s would
        # count as breaker failures: keep the breaker from masking them.
        async with Client(fake, calendar, rpm=rate, rate_interval=window, rate_margin=0.2,
                          minimum_calls=20) as c:
            started = time.monotonic()
            results = await asyncio.gather(
                *(c.provider.fetch_bars(s, NOW - 20 * MS_PER_DAY, NOW) for s in series)
            )
            elapsed = time.monotonic() - started
    assert all(len(b) > 0 for b in results)
    assert fake.rejected_429 == 0
    assert fake.max_in_window() <= rate
    assert elapsed >= 2 * window  # 9 requests at 3 per window need three windows


async def test_a_server_budget_below_the_plan_is_honoured_through_retry_after(
    calendar: SessionCalendar, demo: DemoProvider
) -> None:
    """Configured as unlimited, the provider still ends up with every bar, pausing on 429s."""
    async with FakePolygon(api_key=KEY, budget=3, window=0.2) as fake:
        series = [Series(f"S{i}", AssetClass.STOCK, Timeframe.D1) for i in range(6)]
        held = [await fake.hold_from(demo, s, NOW - 20 * MS_PER_DAY, NOW) for s in series]
        # 429s count as breaker failures; keep the breaker out of this test's way.
        async with Client(fake, calendar, rpm=0, retry_max_retries=6, minimum_calls=20) as c:
            got = await asyncio.gather(
                *(c.provider.fetch_bars(s, NOW - 20 * MS_PER_DAY, NOW) for s in series)
            )
    for g, h in zip(got, held):
        assert_same_bars(g, h)
    assert fake.rejected_429 >= 1
    assert c.provider.resilience_status()["rate_limiters"]["polygon"]["pauses"] >= 1


# -- the key ---------------------------------------------------------------------------------


async def test_the_key_never_leaves_the_authorization_header(
    fake: FakePolygon, calendar: SessionCalendar, demo: DemoProvider, caplog: pytest.LogCaptureFixture
) -> None:
    await fake.hold_from(demo, AAPL_1D, NOW - 30 * MS_PER_DAY, NOW)
    echo = {"status": "ERROR", "request_id": "x", "error": f"bad request for key {KEY}"}
    enrich_logger = logging.getLogger("enrichctl")
    enrich_logger.addHandler(caplog.handler)  # even if logging_setup turned propagation off
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    try:
        async with Client(fake, calendar, timeout=0.2, minimum_calls=20) as c:
            fake.fail_next(500, body=echo)  # a server that echoes the key back
            fake.break_next("garbage")
            await c.provider.fetch_bars(AAPL_1D, NOW - 30 * MS_PER_DAY, NOW)
            for status in (403, 404):
                fake.fail_next(status, body=echo)
                with pytest.raises((ProviderAuthError, PermanentProviderError)) as caught:
                    await c.provider.fetch_bars(AAPL_1D, NOW - 30 * MS_PER_DAY, NOW)
                errors.append(caught.value)
            fake.slow = 0.5
            with pytest.raises(RetryableProviderError) as timed_out:
                await c.provider.fetch_bars(AAPL_1D, NOW - 30 * MS_PER_DAY, NOW)
            errors.append(timed_out.value)
    finally:
        enrich_logger.removeHandler(caplog.handler)
    assert any("***" in str(e) for e in errors)  # the echoed key was blanked out
    assert any(r.name.startswith("enrichctl") for r in caplog.records)  # retries were logged
    texts = [caplog.text, repr(c.provider), json.dumps(c.provider.resilience_status())]
    texts += [repr(r) for r in c.records] + [f"{e!s} {e!r} {e.args}" for e in errors]
    texts += [f"{r.path}?{r.query_string}" for r in fake.requests]
    assert not [t for t in texts if KEY in t]
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in fake.requests)
