"""``GET /metrics``: the store's state in the Prometheus text format, read on every scrape.

Each scrape builds a ``Snapshot`` (the overview document plus a few aggregates), then renders it
through a private ``CollectorRegistry`` with one custom collector: no global registry, no state
kept between scrapes, so several ``serve`` processes on one database all report the same.
Window-based figures (provider requests, latency) cover the dashboard's metrics window and can
go down, so they are gauges and a gauge histogram, not counters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from enrichctl.dashboard import METRICS_WINDOW_HOURS
from enrichctl.service import Session, health

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BREAKER_STATES = ("closed", "half_open", "open")
HEALTH_STATES = ("healthy", "degraded", "unhealthy")


@dataclass(frozen=True, slots=True)
class Aggregates:
    runs_by_status: dict[str, int]
    jobs_by_status: dict[str, int]
    requests: list[tuple[str, str, str, int]]  # (provider, HTTP status or "none", outcome, n)
    latency: dict[str, tuple[list[int], int, float]]  # provider -> (cumulative buckets, count, sum s)


@dataclass(frozen=True, slots=True)
class Schedule:
    """What the alert rules compare against: the timer's period and the configured limits."""

    interval_s: float | None  # between two timer elapses; None without systemd-analyze
    randomized_delay_s: float
    pause_alert_s: float
    last_success_at: float | None  # Unix time the last succeeded run finished


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float
    overview: dict[str, Any]
    health: dict[str, Any]
    aggregates: Aggregates
    schedule: Schedule | None = None


async def exposition(session: Session) -> bytes:
    """The text exposition of the current state (one overview and four aggregate queries)."""
    overview = await session.overview()
    window_start_ms = int(time.time() * 1000) - METRICS_WINDOW_HOURS * 3_600_000
    aggregates = await aggregates_read(session, window_start_ms)
    snapshot = Snapshot(time.time(), overview, health(overview), aggregates,
                        await schedule_read(session))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


class SnapshotCollector(Collector):
    """Turns one ``Snapshot`` into metric families."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield from _runs_and_jobs(snap)
        yield from _requests(snap.aggregates)
        yield from _resilience(snap.overview.get("resilience"))
        yield from _series(snap)
        yield from _monitoring(snap)


def _gauge(name: str, doc: str, labels: tuple[str, ...], values: dict[tuple[str, ...], float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _runs_and_jobs(snap: Snapshot) -> Iterator[Metric]:
    agg, overview = snap.aggregates, snap.overview
    yield _gauge("enrichctl_runs", "Runs recorded in the database, by current status.", ("status",),
                 {(s,): n for s, n in sorted(agg.runs_by_status.items())})
    yield _gauge("enrichctl_jobs", "Jobs (one per symbol and run) recorded, by current status.",
                 ("status",), {(s,): n for s, n in sorted(agg.jobs_by_status.items())})
    by_status: dict[tuple[str, ...], float] = {}
    for symbol in overview["processing_symbols"]:
        by_status[(symbol["status"],)] = by_status.get((symbol["status"],), 0) + 1
    yield _gauge("enrichctl_symbols", "Symbols by the status of their latest job.", ("status",), by_status)
    yield _gauge("enrichctl_run_active", "1 while a run is in progress.", (),
                 {(): 1.0 if overview.get("active_run") else 0.0})
    last = overview.get("last_run")
    if last and last.get("finished_at"):
        yield _gauge("enrichctl_last_run_finished_timestamp_seconds",
                     "When the last finished run ended (Unix time), by its status.", ("status",),
                     {(last["status"],): _iso_seconds(last["finished_at"])})
    yield _gauge("enrichctl_scheduler_paused", "1 while the scheduler is paused.", (),
                 {(): 1.0 if overview["scheduler"]["paused"] else 0.0})
    yield _gauge("enrichctl_health", "1 for the current health verdict, 0 for the others.", ("status",),
                 {(s,): 1.0 if snap.health["status"] == s else 0.0 for s in HEALTH_STATES})


def _requests(agg: Aggregates) -> Iterator[Metric]:
    window = f"{METRICS_WINDOW_HOURS}h"
    yield _gauge("enrichctl_provider_requests",
                 f"Provider requests in the last {window}, by provider, HTTP status and outcome.",
                 ("provider", "code", "outcome"),
                 {(p, code, outcome): n for p, code, outcome, n in agg.requests})
    family = GaugeHistogramMetricFamily(
        "enrichctl_provider_request_latency_seconds",
        f"Latency of provider requests in the last {window} (a window: use histogram_quantile "
        "on the buckets directly, without rate()).",
        labels=["provider"],
    )
    for provider, (cumulative, count, total) in sorted(agg.latency.items()):
        buckets = [(_le(b), c) for b, c in zip(LATENCY_BUCKETS_S, cumulative, strict=True)]
        family.add_metric([provider], [*buckets, ("+Inf", count)], gsum_value=total)
    yield family


def _resilience(snapshot: dict[str, Any] | None) -> Iterator[Metric]:
    """The last run's stored snapshot: the live components died with that run's process."""
    breakers = (snapshot or {}).get("circuit_breakers") or {}
    limiters = (snapshot or {}).get("rate_limiters") or {}
    yield _gauge("enrichctl_circuit_breaker_state",
                 "1 for the state of each circuit breaker at the end of the last run.",
                 ("breaker", "state"),
                 {(name, s): 1.0 if b.get("state") == s else 0.0
                  for name, b in sorted(breakers.items()) for s in BREAKER_STATES})
    yield _gauge("enrichctl_circuit_breaker_opened", "Times each breaker opened during the last run.",
                 ("breaker",), {(name,): b.get("times_opened", 0) for name, b in sorted(breakers.items())})
    yield _gauge("enrichctl_rate_limiter_tokens",
                 "Requests each limiter could admit at once, at the end of the last run.", ("limiter",),
                 {(name,): lim["tokens"] for name, lim in sorted(limiters.items())
                  if lim.get("tokens") is not None})
    yield _gauge("enrichctl_rate_limiter_paused_seconds",
                 "How long each limiter was paused by a 429, at the end of the last run.", ("limiter",),
                 {(name,): lim.get("paused_for", 0.0) for name, lim in sorted(limiters.items())})
    yield from _refusals(limiters)
    if snapshot and snapshot.get("at") is not None:
        yield _gauge("enrichctl_resilience_snapshot_timestamp_seconds",
                     "When the resilience snapshot above was taken (Unix time).", (),
                     {(): float(snapshot["at"])})


def _refusals(limiters: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """What the provider's 429s taught each limiter in the last run: an effective rate below the
    configured one means the plan allows less than configured."""
    limited = {name: lim for name, lim in sorted(limiters.items()) if not lim.get("unlimited")}
    yield _gauge("enrichctl_rate_limiter_rate", "Requests per window each limiter was configured for "
                 "(polygon.requests_per_minute); absent when unlimited.", ("limiter",),
                 {(name,): lim["rate"] for name, lim in limited.items() if "rate" in lim})
    yield _gauge("enrichctl_rate_limiter_window_seconds", "The rolling window each limiter counts over.",
                 ("limiter",), {(name,): lim["interval"] for name, lim in limited.items() if "interval" in lim})
    yield _gauge("enrichctl_rate_limiter_effective_rate",
                 "Requests per window each limiter admitted at the end of the last run: lowered by 429s "
                 "without Retry-After to what the provider accepted, at most the configured rate.",
                 ("limiter",), {(name,): lim["effective_rate"] for name, lim in limited.items()
                                if lim.get("effective_rate") is not None})
    yield _gauge("enrichctl_rate_limiter_refused", "Requests the provider refused (HTTP 429) during the last run.",
                 ("limiter",), {(name,): lim.get("refused", 0) for name, lim in sorted(limiters.items())})
    yield _gauge("enrichctl_rate_limiter_refused_without_retry_after",
                 "Of those, refusals that did not say when to retry (no Retry-After): the provider "
                 "allows less than configured.", ("limiter",),
                 {(name,): lim.get("refused_without_retry_after", 0) for name, lim in sorted(limiters.items())})
    yield _gauge("enrichctl_rate_limiter_last_refused_timestamp_seconds",
                 "When the provider last refused a request of the last run (Unix time); absent if never.",
                 ("limiter",), {(name,): lim["last_refused_at"] for name, lim in sorted(limiters.items())
                                if lim.get("last_refused_at") is not None})


def _series(snap: Snapshot) -> Iterator[Metric]:
    staleness: dict[tuple[str, ...], float] = {}
    stale: dict[tuple[str, ...], float] = {}
    bars: dict[tuple[str, ...], float] = {}
    delisted: dict[tuple[str, ...], float] = {}
    for symbol in snap.overview["processing_symbols"]:
        for series in symbol["series"]:
            key = _series_key(symbol, series)
            if series.get("last_bar"):
                staleness[key] = max(snap.now - _iso_seconds(series["last_bar"]), 0.0)
            stale[key] = 1.0 if series["stale"] else 0.0
            bars[key] = series["bars"]
            delisted[key] = 1.0 if series.get("delisted") else 0.0
    labels = SERIES_LABELS
    yield _gauge("enrichctl_series_staleness_seconds",
                 "Seconds since the start of the last stored bar of each series.", labels, staleness)
    yield _gauge("enrichctl_series_stale", "1 when a series misses complete bars it should have.",
                 labels, stale)
    yield _gauge("enrichctl_series_delisted",
                 "1 when the provider lists the ticker as inactive (never stale then).", labels, delisted)
    yield _gauge("enrichctl_series_bars", "Bars stored per series.", labels, bars)
    yield _gauge("enrichctl_bars_stored", "Bars stored in total.", (),
                 {(): snap.overview["totals"]["bars"]})


# Every per-series figure says where its bars came from: synthetic="true" is demo data.
SERIES_LABELS = ("symbol", "timeframe", "provider", "synthetic")


def _series_key(symbol: dict[str, Any], series: dict[str, Any]) -> tuple[str, ...]:
    return (symbol["symbol"], series["timeframe"], series["provider"],
            "true" if series["synthetic"] else "false")


def _monitoring(snap: Snapshot) -> Iterator[Metric]:
    """What the bundled alert rules (``monitoring/``) need beyond the figures above."""
    quality: dict[tuple[str, ...], float] = {}
    for symbol in snap.overview["processing_symbols"]:
        for series in symbol["series"]:
            if series.get("quality_score") is not None:
                quality[_series_key(symbol, series)] = series["quality_score"]
    yield _gauge("enrichctl_series_quality_score",
                 "Quality score of each series (1 = no issue found; errors weigh more than warnings).",
                 SERIES_LABELS, quality)
    scheduler = snap.overview["scheduler"]
    if scheduler.get("paused_since"):
        yield _gauge("enrichctl_scheduler_paused_since_timestamp_seconds",
                     "When the scheduler was paused (Unix time); absent while not paused.", (),
                     {(): _iso_seconds(scheduler["paused_since"])})
    schedule = snap.schedule
    if schedule is None:
        return
    yield _gauge("enrichctl_scheduler_pause_alert_seconds",
                 "schedule.pause_alert_hours: status --check turns unhealthy after this long paused.",
                 (), {(): schedule.pause_alert_s})
    if schedule.last_success_at is not None:
        yield _gauge("enrichctl_last_successful_run_timestamp_seconds",
                     "When the last succeeded run finished (Unix time).", (), {(): schedule.last_success_at})
    if schedule.interval_s is not None:
        yield _gauge("enrichctl_schedule_interval_seconds",
                     "Seconds between two runs of the configured timer (schedule.on_calendar).", (),
                     {(): schedule.interval_s})
    yield _gauge("enrichctl_schedule_randomized_delay_seconds",
                 "schedule.randomized_delay_seconds: how late a timer run may start.", (),
                 {(): schedule.randomized_delay_s})


async def schedule_read(session: Session) -> Schedule:
    settings = session.settings.schedule
    interval = await asyncio.to_thread(_timer_interval_ms, settings.on_calendar)
    finished = await session.store.runs_last_succeeded_at()
    return Schedule(interval / 1000 if interval is not None else None,
                    float(settings.randomized_delay_seconds), settings.pause_alert_hours * 3600,
                    finished / 1000 if finished is not None else None)


# on_calendar -> (next elapse ms, interval ms or None): the answer holds until that elapse.
_intervals: dict[str, tuple[int, int | None]] = {}


def _timer_interval_ms(on_calendar: str) -> int | None:
    """Between the timer's next two elapses; None without systemd-analyze. Runs systemd-analyze
    (a subprocess, hence the thread) twice per elapse of the timer, not per scrape."""
    from enrichctl.oncalendar import next_elapse

    now = int(time.time() * 1000)
    cached = _intervals.get(on_calendar)
    if cached is not None and now < cached[0]:
        return cached[1]
    if (first := next_elapse(on_calendar, now)) is None:
        return None
    second = next_elapse(on_calendar, first)
    _intervals[on_calendar] = (first, second - first if second is not None else None)
    return _intervals[on_calendar][1]


def _iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _le(bound: float) -> str:
    return repr(float(bound))


# --- aggregates -------------------------------------------------------------------------------


async def aggregates_read(session: Session, since_ms: int) -> Aggregates:
    raw = await session.store.prometheus_raw(since_ms, tuple(b * 1000 for b in LATENCY_BUCKETS_S))
    n_bounds = len(LATENCY_BUCKETS_S)
    return Aggregates(
        runs_by_status={status: int(n) for status, n in raw["runs"]},
        jobs_by_status={status: int(n) for status, n in raw["jobs"]},
        requests=[(provider, str(code) if code is not None else "none", "ok" if ok else "failed", int(n))
                  for provider, code, ok, n in raw["requests"]],
        latency={
            row[0]: ([int(c or 0) for c in row[1:1 + n_bounds]], int(row[1 + n_bounds]),
                     float(row[2 + n_bounds]) / 1000)
            for row in raw["latency"]
        },
    )
