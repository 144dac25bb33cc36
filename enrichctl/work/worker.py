"""One worker's part in a run: start the run (or join the active one), work its jobs until none
is left, and leave it recorded whatever happens (closed, cancelled, or its jobs handed back).

``work`` reads as its steps: ``_start_or_join``, ``_register`` (the heartbeat starts at once: a
long grouped prefetch must not let the lease lapse), ``_prepare`` (create the jobs or adopt the
active run's), ``_jobs_work`` (the claim slots), ``_close``. Bookkeeping that closes a run is
safe to repeat and retried (``_with_store_retries``), so a dropped connection never leaves a
finished run open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

from enrichctl.domain import JobStatus, RequestRecord, RunStatus
from enrichctl.errors import EXIT_CONFIG, ConfigError, RunActive, StoreError, StoreFault
from enrichctl.logs import get_logger, log_event
from enrichctl.pipeline.plan import Mode, RunPlan
from enrichctl.pipeline.task import TaskContext
from enrichctl.providers.grouped import GroupedCache, grouped_prefetch
from enrichctl.resilience.clock import Clock
from enrichctl.resilience.retry import RetryPolicy
from enrichctl.settings import Settings
from enrichctl.store.repo import Store
from enrichctl.work import lease
from enrichctl.work.clock import SYSTEM_CLOCK, wall_ms, within
from enrichctl.work.plans import RunSpec, job_plan, run_follow, selection_add
from enrichctl.work.slots import JobResult, ProgressHook, Runner, RunnerConfig

log = get_logger("runs")

STOP_LIMIT_S = 10.0  # the longest a graceful stop spends recording itself
JOIN_ATTEMPTS = 3

# The dead man's switch: called with "start", "success" or "fail".
Ping = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WorkStart:
    """How this worker comes to a run: the row to create if it starts one, the options document
    a joining run is compared by, whether it may start or join, and the spec it plans with."""

    run_values: dict[str, Any]
    doc: dict[str, Any]
    join: lease.JoinMode
    spec: RunSpec


@dataclass(slots=True)
class WorkDone:
    """What this worker did, for the run's report."""

    status: str = "idle"  # a RunStatus value, or "idle": no active run to join
    run_id: int | None = None
    plan: RunPlan | None = None  # set when this worker joined: the active run's plan
    message: str | None = None
    jobs: list[JobResult] = field(default_factory=list)
    error: str | None = None
    aborted: bool = False
    abort_exit: int = EXIT_CONFIG
    requests: int = 0
    finished_at: int | None = None


@dataclass(slots=True)
class _Session:
    """The worker's state between the steps."""

    settings: Settings
    store: Store
    joined: lease.Joined
    lease_ms: int
    ping: Ping
    clock: Clock
    snapshot: Callable[[], dict[str, Any]] | None
    done: WorkDone
    runner: Runner | None = None
    up_to_date: list[JobResult] = field(default_factory=list)  # jobs found done at the start

    def jobs_done(self) -> int:
        return len(self.runner.results) if self.runner else 0

    def resilience(self) -> dict[str, Any] | None:
        return self.snapshot() if callable(self.snapshot) else None


async def work(
    settings: Settings, ctx: TaskContext, plan: RunPlan, start: WorkStart,
    records: list[RequestRecord], progress: ProgressHook | None, ping: Ping, clock: Clock = SYSTEM_CLOCK,
) -> WorkDone:
    """Start the run (or join the active one) and work its jobs until none is left; every wait
    and time stamp on ``clock``."""
    lease_ms = int(settings.worker_lease_seconds * 1000)
    joined = await _start_or_join(ctx.store, plan, start, lease_ms, clock)
    if joined is None:
        return WorkDone(message="no active run to join", finished_at=wall_ms(clock))
    session = _Session(settings, ctx.store, joined, lease_ms, ping, clock,
                       getattr(ctx.provider, "resilience_status", None), WorkDone(run_id=joined.run_id))
    await _jobs_work(session, ctx, plan, start, records, progress)
    session.done.jobs = session.up_to_date + (session.runner.results if session.runner else [])
    if session.runner is not None and session.runner.abort is not None:
        abort = session.runner.abort
        session.done.error, session.done.aborted, session.done.abort_exit = abort.message, True, abort.exit_code
    await _close(session)
    return session.done


async def _start_or_join(
    store: Store, plan: RunPlan, start: WorkStart, lease_ms: int, clock: Clock
) -> lease.Joined | None:
    """The run this worker works; None when it may only join and nothing is active."""
    for _attempt in range(JOIN_ATTEMPTS):
        joined = await lease.run_start_or_join(store, start.run_values, join=start.join, ttl_ms=lease_ms,
                                               clock=clock)
        # A `run` that joins brings its own selection: its jobs join the run too (a worker
        # only serves the run). The run may close just then: start or join afresh.
        if (joined is None or joined.created or start.join == "only"
                or await selection_add(store, joined.run_id, plan, start.doc, clock)):
            return joined
    raise RunActive("the active run closed each time this run tried to add its jobs; try again")


async def _jobs_work(
    session: _Session, ctx: TaskContext, plan: RunPlan, start: WorkStart,
    records: list[RequestRecord], progress: ProgressHook | None,
) -> None:
    """From here on the run exists: register and beat at once, prepare, run the claim slots;
    a stop (a signal) is recorded before it goes on."""
    store, joined, run_id = session.store, session.joined, session.joined.run_id
    await store.worker_register(joined.worker, run_id, socket.gethostname(), os.getpid())
    beat = asyncio.create_task(lease.heartbeat(
        store, run_id, joined.worker, session.jobs_done, session.lease_ms, clock=session.clock))
    try:
        plan, ctx, spec = await _prepare(session, ctx, plan, start.spec)
        _announce(session, ctx, plan, start, progress)
        settings = session.settings
        session.runner = Runner(
            ctx, RunnerConfig(settings.max_concurrent_symbols, settings.max_retries,
                              settings.retry_delay_seconds, session.lease_ms),
            joined.worker,
            lambda instrument, attempts: job_plan(settings, ctx, spec, instrument, attempts),
            records, progress, session.clock,
        )
        await session.runner.run(run_id)
    except ConfigError as exc:  # e.g. the key refused while prefetching: nothing can proceed
        session.done.error, session.done.aborted = exc.message, True
        await store.jobs_fail_pending(run_id, exc.message)
    except asyncio.CancelledError:
        await _stop_recorded(session)
        raise
    finally:
        beat.cancel()
        with suppress(asyncio.CancelledError):
            await beat
        with suppress(StoreError):
            now = wall_ms(session.clock)
            await asyncio.shield(store.worker_update(
                joined.worker, finished_at=now, heartbeat_at=now, jobs_done=session.jobs_done()))


async def _prepare(
    session: _Session, ctx: TaskContext, plan: RunPlan, spec: RunSpec
) -> tuple[RunPlan, TaskContext, RunSpec]:
    """The starter creates the run's jobs (those already up to date as done) and prefetches the
    grouped days; a joining worker adopts the active run's spec and plans its jobs."""
    run_id = session.joined.run_id
    if not session.joined.created:
        plan, ctx, spec = await run_follow(session.settings, ctx, run_id)
        session.done.plan = plan
        session.done.message = f"joined run {run_id} as worker {session.joined.worker}"
        return plan, replace(ctx, run_id=run_id), spec
    up_to_date = session.up_to_date = [
        JobResult(j.instrument.symbol, JobStatus.SUCCEEDED, 1, up_to_date=len(j.tasks))
        for j in plan.jobs
        if all(t.mode is Mode.UP_TO_DATE and not t.recompute_indicators for t in j.tasks)
    ]
    await session.store.jobs_create(run_id, [j.instrument for j in plan.jobs],
                                    frozenset(r.symbol for r in up_to_date))
    await session.ping("start")
    spec = replace(spec, planned={})
    if plan.grouped_days:
        grouped = plan.grouped_series
        cache = await grouped_prefetch(ctx.provider, plan.grouped_days, grouped)
        ctx = replace(ctx, provider=GroupedCache(ctx.provider, cache, grouped))
        spec = replace(spec, grouped=grouped)
    spec.planned.update({j.instrument.symbol: j for j in plan.jobs})
    return plan, replace(ctx, run_id=run_id), spec


def _announce(
    session: _Session, ctx: TaskContext, plan: RunPlan, start: WorkStart, progress: ProgressHook | None,
) -> None:
    joined = session.joined
    log_event(log, logging.INFO, "enrichment_started", run_id=joined.run_id,
              trigger=start.run_values.get("trigger"), provider=ctx.provider.name, jobs=len(plan.jobs),
              series=len(plan.tasks), requests_planned=plan.requests, worker=joined.worker,
              joined=not joined.created)
    if progress:
        progress("plan", {"plan": plan, "run_id": joined.run_id})
        for result in session.up_to_date:
            progress("job_done", {"result": result})


async def _stop_recorded(session: _Session) -> None:
    """Record the stop, but never let the bookkeeping hold up a stop (systemd's timeout): if it
    cannot finish, the next run finds the lease dead and marks the run abandoned."""
    try:
        await asyncio.shield(within(session.clock, _stop(session), STOP_LIMIT_S))
    except (TimeoutError, StoreError) as exc:
        log_event(log, logging.ERROR, "enrichment_stop_unrecorded", run_id=session.joined.run_id,
                  error=getattr(exc, "message", type(exc).__name__))


async def _stop(session: _Session) -> None:
    """A graceful stop: hand the jobs back to the other workers, or alone cancel the run."""
    done = session.done
    cancelled = await lease.run_cancel(
        session.store, session.joined.run_id, session.joined.worker, session.resilience(), session.lease_ms,
        clock=session.clock,
    )
    done.status = RunStatus.CANCELLED.value if cancelled else RunStatus.RUNNING.value
    done.error = "cancelled by a signal"
    done.finished_at = wall_ms(session.clock)
    if cancelled:
        await session.ping("fail")


async def _close(session: _Session) -> None:
    """Close the run if this worker saw its last job, then count and list what it did."""
    store, run_id, done, settings = session.store, session.joined.run_id, session.done, session.settings
    clock = session.clock

    async def closed(status: RunStatus) -> None:
        await session.ping("success" if status is RunStatus.SUCCEEDED else "fail")

    final = await _with_store_retries(lambda: lease.run_close_if_done(
        store, run_id, error=done.error, resilience=session.resilience(),
        retention_ms=settings.requests_retention_days * 86_400_000, on_closed=closed, clock=clock,
    ), run_id, clock)
    done.status = final.value if final is not None else RunStatus.RUNNING.value
    done.finished_at = wall_ms(clock)
    done.requests = await _with_store_retries(lambda: store.requests_count_for_run(run_id), run_id, clock)
    await _with_store_retries(lambda: _fill_other_workers_jobs(store, run_id, done), run_id, clock)


async def _with_store_retries(operation, run_id: int, clock: Clock, attempts: int = 5):
    """Closing bookkeeping is safe to repeat (a run closes only while it is running): a dropped
    connection must not leave a finished run open. A permanent fault is not tried again."""
    def log_retry(attempt: int, delay: float, exc: BaseException) -> None:
        log_event(log, logging.WARNING, "enrichment_store_error", run_id=run_id,
                  attempt=attempt, error=getattr(exc, "message", str(exc)))

    policy = RetryPolicy(
        "store", clock, max_retries=attempts - 1, initial_delay=1.0, max_delay=5.0,
        retryable=lambda exc: isinstance(exc, StoreError) and not isinstance(exc, StoreFault),
    )
    return await policy.call(operation, on_retry=log_retry)


async def _fill_other_workers_jobs(store: Store, run_id: int, done: WorkDone) -> None:
    """The summary lists every job of the run, also those other workers did."""
    mine = {j.symbol for j in done.jobs}
    for row in await store.jobs_of_run(run_id):
        if row.symbol not in mine:
            done.jobs.append(JobResult(
                row.symbol, JobStatus(row.status), row.attempts, row.bars_fetched, row.bars_written,
                error=row.error, duration_ms=row.duration_ms or 0.0,
            ))
