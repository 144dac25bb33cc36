"""The run use case: settings -> store -> provider -> plan -> worker (``work/``) -> report.

``service`` re-exports what the faces use (``run``, ``RunOptions``, ``RunReport``,
``exit_code_of``, ``store_open``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, JobStatus, RequestRecord, RunStatus, Timeframe, Trigger, ms_to_iso, now_ms
from enrichctl.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from enrichctl.logs import get_logger, log_event
from enrichctl.pipeline.actions import actions_apply, actions_refresh
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.pipeline.plan import RunPlan, grouped_choose, plan_build, universe_select
from enrichctl.pipeline.task import TaskContext
from enrichctl.providers.base import Provider, RequestSink
from enrichctl.providers.registry import provider_check, provider_create, provider_quota
from enrichctl.resilience.ratelimit import RateLimiter
from enrichctl.resilience.registry import ResilienceRegistry
from enrichctl.settings import Settings
from enrichctl.store.coordination import PAUSE_KEY
from enrichctl.store.repo import Store
from enrichctl.work.plans import RunSpec, whole_planner
from enrichctl.work.quota import QuotaWaitClock, SharedRateLimiter
from enrichctl.work.slots import JobResult, ProgressHook, request_sink
from enrichctl.work.worker import WorkDone, WorkStart, work

log = get_logger("runs")


@dataclass(frozen=True, slots=True)
class RunOptions:
    symbols: list[str] | None = None
    asset_class: AssetClass | None = None
    timeframes: tuple[Timeframe, ...] | None = None
    since: int | None = None
    until: int | None = None  # inclusive: the last instant a backfill covers
    full_refresh: bool = False
    dry_run: bool = False
    force: bool = False
    trigger: Trigger = Trigger.CLI
    worker: bool = False  # only join the active run as another worker; never start one
    as_of: int | None = None  # market time the run pretends it is (tests, reproducible backfills)

    def doc(self) -> dict[str, Any]:
        return {
            "symbols": self.symbols,
            "asset_class": self.asset_class.value if self.asset_class else None,
            "timeframes": [t.value for t in self.timeframes] if self.timeframes else None,
            "since": ms_to_iso(self.since),
            "until": ms_to_iso(self.until),
            "full_refresh": self.full_refresh,
            "force": self.force,
            "as_of": ms_to_iso(self.as_of),
        }


@dataclass(slots=True)
class RunReport:
    """What a run did, for the summary and ``run --json``."""

    status: str  # a RunStatus value, or "planned" for --dry-run
    provider: str
    synthetic: bool
    run_id: int | None = None
    plan: RunPlan | None = None
    jobs: list[JobResult] = field(default_factory=list)
    started_at: int = 0
    finished_at: int | None = None
    requests: int = 0
    message: str | None = None
    error: str | None = None
    aborted: bool = False  # a configuration error or an unreachable provider stopped the run
    abort_exit: int = EXIT_CONFIG  # the exit code of what stopped it (78 or 75)

    @property
    def bars_fetched(self) -> int:
        return sum(j.bars_fetched for j in self.jobs)

    @property
    def bars_written(self) -> int:
        return sum(j.bars_written for j in self.jobs)

    def _jobs_in_plan_order(self) -> list[JobResult]:
        """Jobs finish in any order; the summary lists them as the run was asked for."""
        order = {j.instrument.symbol: i for i, j in enumerate(self.plan.jobs)} if self.plan else {}
        return sorted(self.jobs, key=lambda j: (order.get(j.symbol, len(order)), j.symbol))

    def doc(self) -> dict[str, Any]:
        duration = (self.finished_at - self.started_at) / 1000 if self.finished_at else None
        return {
            "run_id": self.run_id,
            "status": self.status,
            "provider": self.provider,
            "synthetic": self.synthetic,
            "started_at": ms_to_iso(self.started_at),
            "finished_at": ms_to_iso(self.finished_at),
            "duration_s": round(duration, 3) if duration is not None else None,
            "jobs_total": len(self.jobs) if self.jobs else (len(self.plan.jobs) if self.plan else 0),
            "jobs_succeeded": sum(j.status is JobStatus.SUCCEEDED for j in self.jobs),
            "jobs_failed": sum(j.status is JobStatus.FAILED for j in self.jobs),
            "bars_fetched": self.bars_fetched,
            "bars_written": self.bars_written,
            "requests": self.requests,
            "message": self.message,
            "error": self.error,
            "jobs": [j.doc() for j in self._jobs_in_plan_order()],
            "plan": self.plan.doc() if self.plan else None,
        }


@asynccontextmanager
async def store_open(settings: Settings, *, migrate: bool = True) -> AsyncIterator[Store]:
    indicators = IndicatorSet(settings.indicators)
    store = await Store.open(
        settings.database_url_resolved(), indicators.columns,
        pool_size=settings.max_concurrent_symbols + 2, migrate=migrate,
    )
    try:
        yield store
    finally:
        await store.close()


ProviderFactory = Callable[[SessionCalendar, RequestSink, Callable[[], int]], Provider]


async def run(
    settings: Settings,
    options: RunOptions,
    progress: ProgressHook | None = None,
    *,
    provider_factory: ProviderFactory | None = None,
) -> RunReport:
    """Bring every selected series up to date (or, with ``dry_run``, only plan it).

    ``provider_factory(calendar, sink, clock)`` replaces the configured provider (tests, fakes)."""
    if provider_factory is None:
        provider_check(settings)  # before anything is created: a missing key changes nothing
    instruments = universe_select(settings, options.symbols, options.asset_class)
    timeframes = options.timeframes or settings.timeframes
    indicators = IndicatorSet(settings.indicators)
    calendar = SessionCalendar()
    records: list[RequestRecord] = []
    as_of = options.as_of
    clock = (lambda: as_of) if as_of is not None else now_ms
    started_at = now_ms()
    market_now = as_of if as_of is not None else started_at
    # --dry-run changes nothing: not by creating a database, not by migrating one. A database
    # that does not exist or is not at the current schema is planned as an empty one.
    scratch = await _scratch_for_plan(settings) if options.dry_run else None
    if scratch is not None:
        settings = settings.model_copy(update={"database_url": f"sqlite:///{scratch.name}/plan.db"})
    try:
        async with store_open(settings) as store:
            if provider_factory is not None:
                provider = provider_factory(calendar, request_sink(records), clock)
            else:
                registry = _registry_for(settings, store, progress)
                provider = provider_create(
                    settings, calendar, request_sink(records), clock=clock, registry=registry
                )
            report = RunReport("running", provider.name, provider.synthetic, started_at=started_at)
            try:
                if options.trigger is Trigger.TIMER and not options.force and not options.dry_run:
                    if (pause := await store.control_get(PAUSE_KEY)) is not None:
                        return await _skip(store, report, options, pause)
                plan = await plan_build(
                    store, calendar, provider, settings, instruments, timeframes, now=market_now,
                    since=options.since, full_refresh=options.full_refresh,
                    indicator_fingerprint=indicators.fingerprint, until=options.until,
                )
                if not options.dry_run:
                    kept = {i.symbol for i in instruments} | {e.symbol for e in settings.universe}
                    await actions_refresh(store, provider, kept, market_now)
                plan = await actions_apply(store, plan, provider, market_now,
                                           whole_planner(settings, store, calendar, provider, indicators, market_now))
                plan = grouped_choose(plan, calendar, provider, settings.polygon.grouped_daily_max_days)
                report.plan = plan
                if options.dry_run:
                    report.status = "planned"
                    report.finished_at = now_ms()
                    return report
                ctx = TaskContext(store, provider, calendar, indicators, settings.quality, None, market_now)
                done = await work(settings, ctx, plan, _work_start(settings, options, report, plan, store.dialect),
                                  records, progress, lambda phase: _ping(settings, phase))
                return _reported(report, done)
            finally:
                await provider.aclose()
    finally:
        if scratch is not None:
            scratch.cleanup()


async def _ping(settings: Settings, phase: str) -> None:
    """The dead man's switch, when one is configured (aiohttp is imported only then)."""
    if settings.notify.ping_url:
        from enrichctl import notify

        await notify.ping(settings.notify, phase)  # type: ignore[arg-type]


async def _scratch_for_plan(settings: Settings) -> tempfile.TemporaryDirectory | None:
    """A throwaway directory to plan in when the configured database would have to be created
    or migrated first."""
    url = make_url(settings.database_url_resolved())
    if url.get_backend_name() == "sqlite" and (not url.database or url.database == ":memory:"):
        return None
    if url.get_backend_name() != "sqlite" or Path(url.database).exists():
        async with store_open(settings, migrate=False) as store:
            if store.schema_current:
                return None
    return tempfile.TemporaryDirectory(prefix="enrichctl-plan-")


def provider_for(settings: Settings, store: Store, calendar: SessionCalendar, sink: RequestSink) -> Provider:
    """The configured provider behind the same resilience stack and shared quota as a run's
    (``verify --against-provider`` refetches through it)."""
    return provider_create(settings, calendar, sink, registry=_registry_for(settings, store))


def _registry_for(settings: Settings, store: Store, progress: ProgressHook | None = None) -> ResilienceRegistry:
    """The run's resilience components. The provider's limiter keeps its window in the database:
    the quota belongs to the key, and every process using it (consecutive runs, `serve`
    triggers, workers on other hosts) must count against the same window."""
    registry = ResilienceRegistry()
    quota = provider_quota(settings)
    if quota is not None and (rate := quota.rate) > 0:
        name, interval = quota.limiter, quota.limiter_window_s
        clock = QuotaWaitClock(registry.clock, progress) if progress is not None else registry.clock
        local = RateLimiter(name, clock, rate=rate, interval=interval,
                            retry_after_cap=settings.resilience.retry_after_cap)
        registry.add_rate_limiter(name, SharedRateLimiter(local, store, name, rate, interval, clock))
    return registry


def _work_start(
    settings: Settings, options: RunOptions, report: RunReport, plan: RunPlan, dialect: str
) -> WorkStart:
    """The run row this run starts with, its options document, and how it may start or join."""
    timeframes = options.timeframes or settings.timeframes
    doc = {**options.doc(), "timeframes": [t.value for t in timeframes]}
    join = "only" if options.worker else ("allowed" if dialect == "postgresql" else "never")
    values = {
        "trigger": options.trigger.value, "status": RunStatus.RUNNING.value,
        "provider": report.provider, "synthetic": report.synthetic, "host": socket.gethostname(),
        "pid": os.getpid(), "started_at": report.started_at, "options": json.dumps(doc),
        "jobs_total": len(plan.jobs), "jobs_succeeded": 0, "jobs_failed": 0, "bars_fetched": 0,
        "bars_written": 0, "requests": 0,
    }
    spec = RunSpec(timeframes, options.since, options.full_refresh, frozenset(), until=options.until)
    return WorkStart(values, doc, join, spec)


def _reported(report: RunReport, done: WorkDone) -> RunReport:
    """The report of a run, with what this worker did in it."""
    report.status, report.run_id, report.finished_at = done.status, done.run_id, done.finished_at
    report.jobs, report.requests, report.message = done.jobs, done.requests, done.message
    report.error, report.aborted, report.abort_exit = done.error, done.aborted, done.abort_exit
    if done.plan is not None:
        report.plan = done.plan
    return report


async def _skip(store: Store, report: RunReport, options: RunOptions, pause: dict) -> RunReport:
    now = now_ms()
    report.run_id = await store.run_create(
        trigger=options.trigger.value, status=RunStatus.SKIPPED.value, provider=report.provider,
        synthetic=report.synthetic, host=socket.gethostname(), pid=os.getpid(),
        started_at=now, finished_at=now, options=json.dumps(options.doc()),
        error=f"paused: {pause.get('reason') or 'no reason given'}",
    )
    report.status = RunStatus.SKIPPED.value
    report.finished_at = now
    report.message = f"scheduler paused since {pause.get('since')} ({pause.get('reason') or 'no reason given'}); run skipped"
    log_event(log, logging.INFO, "enrichment_skipped", run_id=report.run_id, reason=pause.get("reason"))
    return report


def exit_code_of(report: RunReport) -> int:
    """0 done (or skipped, planned, nothing to join); 78 when a configuration error stopped a
    run that could fetch nothing, 75 when an unreachable provider did; 1 when any job failed. A worker whose run goes on elsewhere
    answers for its own jobs."""
    if report.status in ("planned", "idle", RunStatus.SKIPPED.value, RunStatus.SUCCEEDED.value):
        return EXIT_OK
    if report.aborted and report.bars_fetched == 0:
        return report.abort_exit
    if report.status == RunStatus.RUNNING.value:
        return EXIT_OK if all(j.status is JobStatus.SUCCEEDED for j in report.jobs) else EXIT_FAILED
    return EXIT_FAILED
