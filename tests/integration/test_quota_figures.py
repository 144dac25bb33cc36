"""The quota figures say when the provider refused (issue 10, item 8). A real run against the fake
Polygon allowing fewer requests than configured and answering 429 without ``Retry-After``, on
SQLite and PostgreSQL; then the metrics document counts the 429s, names the last one, reports
the rate the limiter settled on, claims no quota left while the provider refuses, and the
Prometheus exposition carries the limiter's refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from fake_polygon import FakePolygon
from prometheus_client.parser import text_string_to_metric_families

from enrichctl import service
from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import MS_PER_DAY, AssetClass, Series, Timeframe, ms_to_iso
from enrichctl.errors import EXIT_OK
from enrichctl.providers.demo import DemoProvider
from enrichctl.settings import Settings
from enrichctl.web import prom

if TYPE_CHECKING:
    from conftest import Database  # the ``db`` fixture: one empty database per backend

KEY = "pk_strict_quota_0123456789"
AS_OF = utc_date_ms("2025-06-02") + 12 * 3_600_000  # Monday 08:00 New York
SYMBOLS = ("AAPL", "MSFT", "NVDA")
REAL, CONFIGURED, WINDOW_S = 5, 40, 1.0  # the provider allows 5 a second; we were told 40


@pytest.fixture
async def strict(calendar: SessionCalendar) -> AsyncIterator[FakePolygon]:
    demo = DemoProvider(calendar, clock=lambda: AS_OF)
    async with FakePolygon(api_key=KEY, page_size=60, budget=REAL, window=WINDOW_S,
                           retry_after=False) as fake:
        for symbol in SYMBOLS:
            for tf in (Timeframe.D1, Timeframe.H1):
                await fake.hold_from(demo, Series(symbol, AssetClass.STOCK, tf), AS_OF - 400 * MS_PER_DAY, AS_OF)
        yield fake


def _settings(fake: FakePolygon, db: Database) -> Settings:
    scale = WINDOW_S / 60  # the retry schedule as it would be against a real minute
    return Settings(
        provider="polygon",
        polygon={"api_key": KEY, "base_url": fake.url, "requests_per_minute": CONFIGURED,
                 "rate_window_seconds": WINDOW_S},
        database_url=db.url,
        universe=[{"symbol": s} for s in SYMBOLS],
        timeframes=("1d", "1h"),
        history_days={"1d": 300, "1h": 20},
        retry_delay_seconds=2.0 * scale,
        resilience={"retry_initial_delay": 1.0 * scale, "retry_max_delay": 60.0 * scale},
    )


def _gauges(text: str) -> dict[str, dict[tuple, float]]:
    return {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
            for f in text_string_to_metric_families(text)}


async def test_the_quota_figures_say_when_a_stricter_provider_refused(strict: FakePolygon, db: Database) -> None:
    settings = _settings(strict, db)
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert report.doc()["jobs_failed"] == 0
    assert strict.rejected_429 >= 1, "the provider never refused: the test tests nothing"
    assert strict.max_in_window() <= REAL

    # Every refusal is recorded, and the run's limiter learned the provider allows less.
    recorded = db.scalar("SELECT count(*) FROM requests WHERE status = 429")
    assert recorded == strict.rejected_429
    last_refused = db.scalar("SELECT max(at) FROM requests WHERE status = 429")
    last_request = db.scalar("SELECT max(at) FROM requests")
    async with service.session_open(settings) as session:
        limiter = (await session.overview())["resilience"]["rate_limiters"]["polygon"]
        refusing = (await session.metrics(now=last_refused + 1))["fetch_pipeline"]
        # A window after the last request: nothing refused or spent in it.
        later = (await session.metrics(now=last_request + int(WINDOW_S * 1000) + 1))["fetch_pipeline"]
        exposition = (await prom.exposition(session)).decode()
    assert limiter["refused"] == limiter["refused_without_retry_after"] == strict.rejected_429
    effective = limiter["effective_rate"]
    print(f"{len(strict.requests)} requests, {strict.rejected_429} refused, settled on {effective}")
    assert 1 <= effective < CONFIGURED

    # While it refuses, no quota is claimed, whatever our own count of requests says.
    assert refusing["api_quota_remaining"] == 0
    assert "the provider refused" in refusing["api_quota_basis"]
    for fetch in (refusing, later):
        assert fetch["api_quota_refused"] == strict.rejected_429
        assert fetch["api_quota_last_refused_at"] == ms_to_iso(last_refused)
        assert (fetch["api_quota_limit"], fetch["api_quota_effective_rate"]) == (CONFIGURED, effective)
    # Once it stops refusing, what is left is the rate it accepted, not the configured one.
    assert later["api_quota_remaining"] == effective
    assert f"{effective} per rolling 1 s" in later["api_quota_basis"]
    assert f"({CONFIGURED} configured)" in later["api_quota_basis"]

    gauges = _gauges(exposition)
    polygon = (("limiter", "polygon"),)
    assert gauges["enrichctl_rate_limiter_refused"][polygon] == strict.rejected_429
    assert gauges["enrichctl_rate_limiter_refused_without_retry_after"][polygon] == strict.rejected_429
    assert gauges["enrichctl_rate_limiter_effective_rate"][polygon] == effective
    assert gauges["enrichctl_rate_limiter_rate"][polygon] == CONFIGURED
    assert gauges["enrichctl_rate_limiter_last_refused_timestamp_seconds"][polygon] == pytest.approx(
        last_refused / 1000, abs=1.0)
    assert gauges["enrichctl_provider_requests"][
        (("code", "429"), ("outcome", "failed"), ("provider", "polygon"))] == strict.rejected_429


async def test_a_demo_run_has_no_quota_and_no_refusals(db: Database) -> None:
    settings = db.settings(["AAPL"])
    assert (await service.run(settings, service.RunOptions(symbols=["AAPL"]))).status == "succeeded"
    async with service.session_open(settings) as session:
        fetch = (await session.metrics())["fetch_pipeline"]
    assert fetch["api_quota_remaining"] is None and fetch["api_quota_basis"] == "provider demo has no quota"
    assert (fetch["api_quota_refused"], fetch["api_quota_last_refused_at"]) == (0, None)
