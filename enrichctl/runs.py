"""The run use case: plan, start (or join) a run, work its jobs, close it; and its report.

``service`` re-exports what the faces use (``run``, ``RunOptions``, ``RunReport``,
``exit_code_of``, ``store_open``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from enrichctl.domain import (
    AssetClass,
    Instrument,
    JobStatus,
    RequestRecord,
    RunStatus,
    Series,
    Timeframe,
    Trigger,
    datetime_to_ms,
    ms_to_iso,
    now_ms,
)
from enrichctl.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, ConfigError, RunActive, StoreError, StoreFault
from enrichctl.logs import get_logger, log_event
from enrichctl.work import lease as lifecycle
from enrichctl.calendar import SessionCalendar
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.pipeline.plan import (
    JobPlan,
    Mode,
    RunPlan,
    SeriesPlan,
    grouped_apply,
    grouped_choose,
    plan_build,
    series_plan,
    universe_select,
)
from enrichctl.work.quota import QuotaWaitClock, SharedRateLimiter
from enrichctl.work.slots import (
    JobResult,
    ProgressHook,
    Runner,
    RunnerConfig,
    request_sink,
)
from enrichctl.pipeline.actions import SeriesPlanner, actions_apply, actions_refresh
from enrichctl.pipeline.task import TaskContext
from enrichctl.providers.base import Provider, RequestSink
from enrichctl.providers.registry import provider_check, provider_create, provider_quota
from enrichctl.providers.grouped import GroupedCache, grouped_prefetch
from enrichctl.resilience.ratelimit import RateLimiter
from enrichctl.resilience.registry import ResilienceRegistry
from enrichctl.settings import Settings
from enrichctl.store.coordination import PAUSE_KEY
from enrichctl.store.repo import Store

log = get_logger("runs")

STOP_LIMIT_S = 10.0  # the longest a graceful stop spends recording itself


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
                                           _whole_planner(settings, store, calendar, provider, indicators, market_now))
                plan = grouped_choose(plan, calendar, provider, settings.polygon.grouped_daily_max_days)
                report.plan = plan
                if options.dry_run:
                    report.status = "planned"
                    report.finished_at = now_ms()
                    return report
                ctx = TaskContext(store, provider, calendar, indicators, settings.quality, None, market_now)
                await _work(settings, ctx, plan, options, report, records, progress)
                return report
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


async def _work(
    settings: Settings, ctx: TaskContext, plan: RunPlan, options: RunOptions, report: RunReport,
    records: list[RequestRecord], progress: ProgressHook | None,
) -> None:
    """Start the run (or join the active one) and work its jobs until none is left."""
    store = ctx.store
    lease_ms = int(settings.worker_lease_seconds * 1000)
    join = "only" if options.worker else ("allowed" if store.dialect == "postgresql" else "never")
    doc = options.doc()
    doc["timeframes"] = [t.value for t in (options.timeframes or settings.timeframes)]
    for _attempt in range(JOIN_ATTEMPTS):
        joined = await lifecycle.run_start_or_join(store, {
            "trigger": options.trigger.value, "status": RunStatus.RUNNING.value,
            "provider": report.provider, "synthetic": report.synthetic, "host": socket.gethostname(),
            "pid": os.getpid(), "started_at": report.started_at, "options": json.dumps(doc),
            "jobs_total": len(plan.jobs), "jobs_succeeded": 0, "jobs_failed": 0, "bars_fetched": 0,
            "bars_written": 0, "requests": 0,
        }, join=join, ttl_ms=lease_ms)
        # A `run` that joins brings its own selection: its jobs join the run too (a worker
        # only serves the run). The run may close just then: start or join afresh.
        if joined is None or joined.created or options.worker or await _add_selection(store, joined.run_id, plan, doc):
            break
    else:
        raise RunActive("the active run closed each time this run tried to add its jobs; try again")
    if joined is None:
        report.status = "idle"
        report.message = "no active run to join"
        report.finished_at = now_ms()
        return
    run_id = report.run_id = joined.run_id
    # From here on the run exists: register and beat at once (a long prefetch must not let the
    # lease lapse), and whatever happens, leave it recorded (closed, cancelled or handed back).
    await store.worker_register(joined.worker, run_id, socket.gethostname(), os.getpid())
    runner: Runner | None = None
    up_to_date: list[JobResult] = []
    beat = asyncio.create_task(lifecycle.heartbeat(
        store, run_id, joined.worker, lambda: len(runner.results) if runner else 0, lease_ms
    ))
    snapshot = getattr(ctx.provider, "resilience_status", None)
    try:
        spec = _RunSpec.of(options, settings, frozenset())
        if joined.created:
            up_to_date = [
                JobResult(j.instrument.symbol, JobStatus.SUCCEEDED, 1, up_to_date=len(j.tasks))
                for j in plan.jobs
                if all(t.mode is Mode.UP_TO_DATE and not t.recompute_indicators for t in j.tasks)
            ]
            await store.jobs_create(run_id, [j.instrument for j in plan.jobs],
                                    frozenset(r.symbol for r in up_to_date))
            await _ping(settings, "start")
            if plan.grouped_days:
                grouped = plan.grouped_series
                cache = await grouped_prefetch(ctx.provider, plan.grouped_days, grouped)
                ctx = replace(ctx, provider=GroupedCache(ctx.provider, cache, grouped))
                spec = _RunSpec.of(options, settings, grouped)
            spec.planned.update({j.instrument.symbol: j for j in plan.jobs})
        else:
            plan, ctx, spec = await _follow(settings, ctx, run_id)
            report.plan = plan
            report.message = f"joined run {run_id} as worker {joined.worker}"
        ctx = replace(ctx, run_id=run_id)
        log_event(log, logging.INFO, "enrichment_started", run_id=run_id,
                  trigger=options.trigger.value, provider=ctx.provider.name, jobs=len(plan.jobs),
                  series=len(plan.tasks), requests_planned=plan.requests, worker=joined.worker,
                  joined=not joined.created)
        if progress:
            progress("plan", {"plan": plan, "run_id": run_id})
            for result in up_to_date:
                progress("job_done", {"result": result})
        runner = Runner(
            ctx, RunnerConfig(settings.max_concurrent_symbols, settings.max_retries,
                              settings.retry_delay_seconds, lease_ms),
            joined.worker,
            lambda instrument, attempts: _plan_one(settings, ctx, spec, instrument, attempts),
            records, progress,
        )
        await runner.run(run_id)
    except ConfigError as exc:  # e.g. the key refused while prefetching: nothing can proceed
        report.error, report.aborted = exc.message, True
        await store.jobs_fail_pending(run_id, exc.message)
    except asyncio.CancelledError:
        # Record the stop, but never let the bookkeeping hold up a stop (systemd's timeout):
        # if it cannot finish, the next run finds the lease dead and marks the run abandoned.
        try:
            await asyncio.shield(asyncio.wait_for(
                _stop(settings, store, run_id, joined.worker, snapshot, report, lease_ms), STOP_LIMIT_S
            ))
        except (TimeoutError, StoreError) as exc:
            log_event(log, logging.ERROR, "enrichment_stop_unrecorded", run_id=run_id,
                      error=getattr(exc, "message", type(exc).__name__))
        raise
    finally:
        beat.cancel()
        with suppress(asyncio.CancelledError):
            await beat
        with suppress(StoreError):
            await asyncio.shield(store.worker_update(
                joined.worker, finished_at=now_ms(), heartbeat_at=now_ms(),
                jobs_done=len(runner.results) if runner else 0))
    report.jobs = up_to_date + (runner.results if runner else [])
    if runner is not None and runner.abort is not None:
        report.error = runner.abort.message
        report.aborted = True
        report.abort_exit = runner.abort.exit_code

    async def closed(status: RunStatus) -> None:
        await _ping(settings, "success" if status is RunStatus.SUCCEEDED else "fail")

    final = await _with_store_retries(lambda: lifecycle.run_close_if_done(
        store, run_id, error=report.error, resilience=snapshot() if callable(snapshot) else None,
        retention_ms=settings.requests_retention_days * 86_400_000, on_closed=closed,
    ), run_id)
    report.status = final.value if final is not None else RunStatus.RUNNING.value
    report.finished_at = now_ms()
    report.requests = await _with_store_retries(lambda: store.requests_count_for_run(run_id), run_id)
    await _with_store_retries(lambda: _fill_other_workers_jobs(store, run_id, report), run_id)


JOIN_ATTEMPTS = 3
# What a run's jobs are fetched with: a run joined with other values would not do what was asked.
_SPEC_KEYS = ("timeframes", "since", "until", "full_refresh", "as_of")


async def _add_selection(store: Store, run_id: int, plan: RunPlan, doc: dict[str, Any]) -> bool:
    """Add this run's jobs that the active run lacks to it; False when it closed meanwhile.
    Raises ``RunActive`` (75) when the active run fetches with other options (timeframes, since,
    until, full refresh, as-of): its workers would not fetch what this run was asked."""
    run = await store.run_get(run_id)
    if run is None or run.status != RunStatus.RUNNING.value:
        return False
    active = json.loads(run.options or "{}")
    differ = [k for k in _SPEC_KEYS if k in active and _spec_value(k, active[k]) != _spec_value(k, doc.get(k))]
    if differ:
        raise RunActive(
            f"run {run_id} is active with other {', '.join(differ)} "
            f"({', '.join(f'{k}={active[k]}' for k in differ)}); it cannot fetch this selection: "
            "try again when it has finished")
    have = {j.symbol for j in await store.jobs_of_run(run_id)}
    missing = [j.instrument for j in plan.jobs if j.instrument.symbol not in have]
    if not missing:
        return True
    added = await store.jobs_add(run_id, missing)
    if added:
        log_event(log, logging.INFO, "enrichment_jobs_added", run_id=run_id,
                  symbols=",".join(i.symbol for i in missing))
    return added


def _spec_value(key: str, value: Any) -> Any:
    return sorted(value) if key == "timeframes" and value is not None else value


async def _with_store_retries(operation, run_id: int, attempts: int = 5):
    """Closing bookkeeping is safe to repeat (a run closes only while it is running): a dropped
    connection must not leave a finished run open."""
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except StoreError as exc:
            if attempt == attempts or isinstance(exc, StoreFault):
                raise
            log_event(log, logging.WARNING, "enrichment_store_error", run_id=run_id,
                      attempt=attempt, error=exc.message)
            await asyncio.sleep(min(0.5 * 2 ** attempt, 5.0))


async def _stop(
    settings: Settings, store: Store, run_id: int, worker: str, snapshot, report: RunReport,
    lease_ms: int,
) -> None:
    cancelled = await lifecycle.run_cancel(
        store, run_id, worker, snapshot() if callable(snapshot) else None, lease_ms
    )
    report.status = RunStatus.CANCELLED.value if cancelled else RunStatus.RUNNING.value
    report.error = "cancelled by a signal"
    report.finished_at = now_ms()
    if cancelled:
        await _ping(settings, "fail")


async def _fill_other_workers_jobs(store: Store, run_id: int, report: RunReport) -> None:
    """The summary lists every job of the run, also those other workers did."""
    mine = {j.symbol for j in report.jobs}
    for row in await store.jobs_of_run(run_id):
        if row.symbol not in mine:
            report.jobs.append(JobResult(
                row.symbol, JobStatus(row.status), row.attempts, row.bars_fetched, row.bars_written,
                error=row.error, duration_ms=row.duration_ms or 0.0,
            ))


@dataclass(frozen=True, slots=True)
class _RunSpec:
    """What every worker of a run plans with (a joining worker reads it from the run row)."""

    timeframes: tuple[Timeframe, ...]
    since: int | None
    full_refresh: bool
    grouped: frozenset[Series]  # series this worker serves from grouped-daily responses
    planned: dict[str, JobPlan] = field(default_factory=dict)  # the run's own plan, used once
    until: int | None = None

    @classmethod
    def of(cls, options: RunOptions, settings: Settings, grouped: frozenset[Series]) -> _RunSpec:
        return cls(options.timeframes or settings.timeframes, options.since, options.full_refresh,
                   grouped, until=options.until)


async def _plan_one(
    settings: Settings, ctx: TaskContext, spec: _RunSpec, instrument: Instrument, attempts: int
) -> JobPlan:
    """Plan one claimed job from the watermarks as they are now. A job never attempted before
    takes the plan this worker made at the start: nobody has touched its series since."""
    planned = spec.planned.pop(instrument.symbol, None)
    if planned is not None and attempts == 0:
        return planned
    plan = await plan_build(
        ctx.store, ctx.calendar, ctx.provider, settings, [instrument], spec.timeframes,
        now=ctx.now, since=spec.since, full_refresh=spec.full_refresh,
        indicator_fingerprint=ctx.indicators.fingerprint, until=spec.until,
    )
    plan = await actions_apply(ctx.store, plan, ctx.provider, ctx.now,
                               _whole_planner(settings, ctx.store, ctx.calendar, ctx.provider, ctx.indicators, ctx.now))
    return grouped_apply(plan.jobs[0], spec.grouped)


async def _follow(
    settings: Settings, ctx: TaskContext, run_id: int
) -> tuple[RunPlan, TaskContext, _RunSpec]:
    """A joining worker adopts the active run's spec (timeframes, since, as-of) and jobs."""
    run = await ctx.store.run_get(run_id)
    assert run is not None
    spec = json.loads(run.options)
    timeframes = tuple(Timeframe(t) for t in spec.get("timeframes") or [t.value for t in settings.timeframes])
    since = _iso_ms(spec.get("since"))
    as_of = _iso_ms(spec.get("as_of"))
    now = as_of if as_of is not None else ctx.now
    instruments = [Instrument(j.symbol, AssetClass(j.asset_class)) for j in await ctx.store.jobs_of_run(run_id)]
    until = _iso_ms(spec.get("until"))
    run_spec = _RunSpec(timeframes, since, bool(spec.get("full_refresh")), frozenset(), until=until)
    plan = await plan_build(
        ctx.store, ctx.calendar, ctx.provider, settings, instruments, timeframes, now=now,
        since=since, full_refresh=run_spec.full_refresh,
        indicator_fingerprint=ctx.indicators.fingerprint, until=until,
    )
    plan = await actions_apply(ctx.store, plan, ctx.provider, now,
                               _whole_planner(settings, ctx.store, ctx.calendar, ctx.provider, ctx.indicators, now))
    new_ctx = TaskContext(ctx.store, ctx.provider, ctx.calendar, ctx.indicators, ctx.quality, run_id, now)
    return plan, new_ctx, run_spec


def _whole_planner(
    settings: Settings, store: Store, calendar: SessionCalendar, provider: Provider,
    indicators: IndicatorSet, now: int,
) -> SeriesPlanner:
    """Plans a stored series outside the run's timeframes as a plain run would (a split turns
    it into a whole refetch): no --since, no --until, no --full-refresh of its own."""

    def plan(series: Series) -> Awaitable[SeriesPlan]:
        return series_plan(store, calendar, provider, settings, series, now=now, since=None,
                           full_refresh=False, fingerprint=indicators.fingerprint)

    return plan


def _iso_ms(text: str | None) -> int | None:
    if text is None:
        return None
    return datetime_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


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
