"""The use cases both faces (CLI and ``serve``) share: run, pause, resume, and the documents.

Each function opens what it needs (store, calendar, provider), does one thing, and closes them.
Nothing here imports typer, rich or aiohttp.web.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from enrichctl import dashboard
from enrichctl.domain import AssetClass, JobStatus, RunStatus, Timeframe, Trigger, ms_to_iso, now_ms
from enrichctl.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, RunActive, StoreError
from enrichctl.logs import get_logger, log_event
from enrichctl.pipeline.calendar import SessionCalendar
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.pipeline.plan import RunPlan, plan_build, universe_select
from enrichctl.pipeline.runner import JobResult, ProgressHook, Runner, RunnerConfig
from enrichctl.pipeline.task import TaskContext
from enrichctl.providers.base import Provider, RequestRecord, RequestSink, provider_create
from enrichctl.settings import Settings
from enrichctl.store.repo import Store

log = get_logger("service")

LEASE_TTL_MS = 60_000
HEARTBEAT_S = 15.0
PAUSE_KEY = "pause"


@dataclass(frozen=True, slots=True)
class RunOptions:
    symbols: list[str] | None = None
    asset_class: AssetClass | None = None
    timeframes: tuple[Timeframe, ...] | None = None
    since: int | None = None
    full_refresh: bool = False
    dry_run: bool = False
    force: bool = False
    trigger: Trigger = Trigger.CLI
    as_of: int | None = None  # market time the run pretends it is (tests, reproducible backfills)

    def doc(self) -> dict[str, Any]:
        return {
            "symbols": self.symbols,
            "asset_class": self.asset_class.value if self.asset_class else None,
            "timeframes": [t.value for t in self.timeframes] if self.timeframes else None,
            "since": ms_to_iso(self.since),
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
    aborted: bool = False  # a configuration error (e.g. a refused key) stopped the run

    @property
    def bars_fetched(self) -> int:
        return sum(j.bars_fetched for j in self.jobs)

    @property
    def bars_written(self) -> int:
        return sum(j.bars_written for j in self.jobs)

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
            "jobs": [j.doc() for j in self.jobs],
            "plan": self.plan.doc() if self.plan else None,
        }


@asynccontextmanager
async def store_open(settings: Settings) -> AsyncIterator[Store]:
    indicators = IndicatorSet(settings.indicators)
    store = await Store.open(
        settings.database_url_resolved(), indicators.columns,
        pool_size=settings.max_concurrent_symbols + 2,
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
    instruments = universe_select(settings, options.symbols, options.asset_class)
    timeframes = options.timeframes or settings.timeframes
    indicators = IndicatorSet(settings.indicators)
    calendar = SessionCalendar()
    records: list[RequestRecord] = []
    as_of = options.as_of
    clock = (lambda: as_of) if as_of is not None else now_ms
    if provider_factory is not None:
        provider = provider_factory(calendar, records.append, clock)
    else:
        provider = provider_create(settings, calendar, records.append, clock=clock)
    report = RunReport("running", provider.name, provider.synthetic, started_at=now_ms())
    market_now = as_of if as_of is not None else report.started_at
    try:
        async with store_open(settings) as store:
            if options.trigger is Trigger.TIMER and not options.force and not options.dry_run:
                if (pause := await store.control_get(PAUSE_KEY)) is not None:
                    return await _skip(store, report, options, pause)
            plan = await plan_build(
                store, calendar, provider, settings, instruments, timeframes, now=market_now,
                since=options.since, full_refresh=options.full_refresh,
                indicator_fingerprint=indicators.fingerprint,
            )
            report.plan = plan
            if options.dry_run:
                report.status = "planned"
                report.finished_at = now_ms()
                return report
            ctx = TaskContext(store, provider, calendar, indicators, settings.quality, None, market_now)
            await _run_with_lease(settings, store, ctx, plan, options, report, records, progress)
            return report
    finally:
        await provider.aclose()


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


async def _run_with_lease(
    settings: Settings, store: Store, ctx: TaskContext, plan: RunPlan, options: RunOptions,
    report: RunReport, records: list[RequestRecord], progress: ProgressHook | None,
) -> None:
    run_id = await _run_start(store, report, options)
    report.run_id = run_id
    ctx = TaskContext(ctx.store, ctx.provider, ctx.calendar, ctx.indicators, ctx.quality, run_id, ctx.now)
    heartbeat = asyncio.create_task(_heartbeat(store, run_id))
    final = RunStatus.FAILED
    try:
        job_ids = await store.jobs_create(run_id, [j.instrument for j in plan.jobs])
        log_event(log, logging.INFO, "enrichment_started", run_id=run_id, trigger=options.trigger.value,
                  provider=ctx.provider.name, jobs=len(plan.jobs), series=len(plan.tasks),
                  requests_planned=plan.requests)
        if progress:
            progress("plan", {"plan": plan, "run_id": run_id})
        config = RunnerConfig(settings.max_concurrent_symbols, settings.max_retries,
                              settings.retry_delay_seconds)
        runner = Runner(ctx, config, job_ids, records, progress)
        report.jobs = await runner.run(plan)
        if runner.abort is not None:
            report.error = runner.abort.message
            report.aborted = True
        final = _run_status(report.jobs)
    except asyncio.CancelledError:
        final = RunStatus.CANCELLED
        report.error = "cancelled by a signal"
        raise
    except StoreError as exc:
        report.error = exc.message
        raise
    finally:
        heartbeat.cancel()
        with suppress(asyncio.CancelledError):
            await heartbeat
        report.status = final.value
        report.finished_at = now_ms()
        await _run_finish(store, report, ctx, settings)


async def _run_start(store: Store, report: RunReport, options: RunOptions) -> int:
    """Take the run lease (exit 75 when another live run holds it); abandon dead runs."""
    lease = await store.lease_get()
    now = now_ms()
    dead_holder = None
    if lease is not None and lease.expires_at >= now and not _holder_alive(lease.host, lease.pid):
        dead_holder = lease.run_id
    if lease is not None and lease.expires_at >= now and dead_holder is None:
        age = (now - lease.heartbeat_at) / 1000
        raise RunActive(
            f"run {lease.run_id} is active (host {lease.host}, pid {lease.pid}, "
            f"heartbeat {age:.0f} s ago); try again when it has finished"
        )
    dead = [r.id for r in await store.runs_running()]
    if dead:
        await store.runs_abandon(dead, "abandoned: its process stopped without finishing")
        log_event(log, logging.WARNING, "enrichment_abandoned_runs", runs=",".join(map(str, dead)))
    try:
        run_id = await store.run_create(
            trigger=options.trigger.value, status=RunStatus.RUNNING.value, provider=report.provider,
            synthetic=report.synthetic, host=socket.gethostname(), pid=os.getpid(),
            started_at=report.started_at, options=json.dumps(options.doc()),
            jobs_total=0, jobs_succeeded=0, jobs_failed=0, bars_fetched=0, bars_written=0, requests=0,
        )
    except StoreError:
        raise RunActive("another run started at the same moment; try again when it has finished") from None
    holder = await store.lease_claim(
        run_id, socket.gethostname(), os.getpid(), LEASE_TTL_MS, dead_run_id=dead_holder
    )
    if holder.run_id != run_id:
        await store.run_update(run_id, status=RunStatus.CANCELLED.value, finished_at=now_ms(),
                               error=f"lost the lease to run {holder.run_id}")
        raise RunActive(f"run {holder.run_id} is active (host {holder.host}, pid {holder.pid})")
    return run_id


def _holder_alive(host: str, pid: int) -> bool:
    """A lease holder on this host whose process is gone is dead now, not at lease expiry;
    on another host only the expiry can tell."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


async def _heartbeat(store: Store, run_id: int) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            await store.lease_heartbeat(run_id, LEASE_TTL_MS)
        except StoreError as exc:  # a busy database must not kill the run; the next beat retries
            log_event(log, logging.WARNING, "enrichment_heartbeat_failed", run_id=run_id, error=exc.message)


async def _run_finish(store: Store, report: RunReport, ctx: TaskContext, settings: Settings) -> None:
    """Record the outcome even when cancelled: shielded from a second cancellation."""
    async def finish() -> None:
        assert report.run_id is not None
        report.requests = await store.requests_count_for_run(report.run_id)
        snapshot = getattr(ctx.provider, "resilience_status", None)
        await store.run_update(
            report.run_id, status=report.status, finished_at=report.finished_at,
            jobs_total=len(report.plan.jobs) if report.plan else 0,
            jobs_succeeded=sum(j.status is JobStatus.SUCCEEDED for j in report.jobs),
            jobs_failed=sum(j.status is JobStatus.FAILED for j in report.jobs),
            bars_fetched=report.bars_fetched, bars_written=report.bars_written,
            requests=report.requests, error=report.error,
            resilience=json.dumps(snapshot()) if callable(snapshot) else None,
        )
        if report.status == RunStatus.CANCELLED.value:
            await store.runs_abandon_jobs(report.run_id, "run cancelled")
        await store.lease_release(report.run_id)
        await store.requests_prune(report.started_at - settings.requests_retention_days * 86_400_000)
        event = "enrichment_run_finished"
        log_event(log, logging.INFO if report.status == "succeeded" else logging.WARNING, event,
                  run_id=report.run_id, status=report.status, bars_fetched=report.bars_fetched,
                  bars_written=report.bars_written, requests=report.requests)

    await asyncio.shield(finish())


def _run_status(jobs: list[JobResult]) -> RunStatus:
    failed = sum(j.status is not JobStatus.SUCCEEDED for j in jobs)
    if failed == 0:
        return RunStatus.SUCCEEDED
    return RunStatus.FAILED if failed == len(jobs) else RunStatus.PARTIAL


# --- control and documents: one Session serves a CLI command or a whole `serve` process -----


class Session:
    """An open store (and, lazily, the calendar) with the use cases that read or steer it.

    The CLI opens one per command; ``serve`` keeps one for its lifetime, so a request costs
    queries only."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._calendar: SessionCalendar | None = None

    @property
    def calendar(self) -> SessionCalendar:
        if self._calendar is None:
            self._calendar = SessionCalendar()
        return self._calendar

    async def overview(self) -> dict[str, Any]:
        return await dashboard.overview(self.store, self.settings, self.calendar, now_ms())

    async def health(self) -> dict[str, Any]:
        return dashboard.health_from_overview(await self.overview())

    async def job_status(self, symbol: str) -> dict[str, Any]:
        return await dashboard.job_status(self.store, self.settings, self.calendar, symbol, now_ms())

    async def history(self, limit: int) -> dict[str, Any]:
        return await dashboard.history(self.store, limit)

    async def metrics(self) -> dict[str, Any]:
        return await dashboard.metrics(self.store, self.settings, now_ms())

    async def pause(self, reason: str | None, by: str | None = None) -> dict[str, Any]:
        now = now_ms()
        value = {"paused": True, "reason": reason, "by": by or _who(), "since": ms_to_iso(now),
                 "since_ms": now}
        await self.store.control_put(PAUSE_KEY, value)
        log_event(log, logging.INFO, "enrichment_paused", reason=reason, by=value["by"])
        return value

    async def resume(self) -> dict[str, Any]:
        was = await self.store.control_get(PAUSE_KEY)
        await self.store.control_delete(PAUSE_KEY)
        log_event(log, logging.INFO, "enrichment_resumed", was_paused=was is not None)
        return {"paused": False, "was_paused": was is not None}

    async def active_run(self) -> dict[str, Any] | None:
        """The live holder of the run lease, or None (an expired lease is not live)."""
        lease = await self.store.lease_get()
        if lease is None or lease.expires_at < now_ms():
            return None
        return {"run_id": lease.run_id, "host": lease.host, "pid": lease.pid,
                "heartbeat_at": ms_to_iso(lease.heartbeat_at)}


@asynccontextmanager
async def session_open(settings: Settings) -> AsyncIterator[Session]:
    async with store_open(settings) as store:
        yield Session(settings, store)


def _who() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"


def health(overview_doc: dict[str, Any]) -> dict[str, Any]:
    return dashboard.health_from_overview(overview_doc)


def health_of_symbol(job_status_doc: dict[str, Any]) -> dict[str, Any]:
    return dashboard.health_of_symbol(job_status_doc, job_status_doc.get("generated_at"))


async def db_upgrade(settings: Settings) -> dict[str, Any]:
    """Opening the store applies the migrations; report where the schema stands."""
    from enrichctl.store import migrate

    async with store_open(settings) as store:
        async with store.engine.connect() as conn:
            current = await conn.run_sync(migrate.current_revision)
    return {"revision": current, "head": migrate.head_revision()}


def exit_code_of(report: RunReport) -> int:
    """0 done (or skipped, or planned); 78 when a configuration error stopped a run that could
    fetch nothing; 1 when any job failed."""
    if report.status in ("planned", RunStatus.SKIPPED.value, RunStatus.SUCCEEDED.value):
        return EXIT_OK
    if report.aborted and report.bars_fetched == 0:
        return EXIT_CONFIG
    return EXIT_FAILED
