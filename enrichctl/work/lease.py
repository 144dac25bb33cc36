"""The life of a run in the database: start it (or join it), keep it alive, close it once.

One run is active per database: the ``run`` lease (holder, heartbeat, expiry) guards it. A run
can have several workers (processes, on PostgreSQL several hosts); each renews the lease, so the
run lives while any worker does. A lease whose heartbeat stopped is taken over and its run marked
``abandoned``. Whichever worker sees the last job finish closes the run.

The start/join/take-over choice is ``lease_decide``: a pure function of what the database holds
(lease, the run's workers, its run, the running runs) and the time, returning a decision that
``run_start_or_join`` carries out.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from enrichctl.domain import JOB_UNFINISHED, RunStatus
from enrichctl.errors import RunActive, StoreConflict, StoreError
from enrichctl.logs import get_logger, log_event
from enrichctl.resilience.clock import Clock
from enrichctl.store.repo import Store
from enrichctl.store.rows import LeaseRow, RunRow, WorkerRow
from enrichctl.work.clock import SYSTEM_CLOCK, wall_ms

log = get_logger("lifecycle")

LEASE_TTL_MS = 60_000  # default; runs use settings.worker_lease_seconds


@dataclass(frozen=True, slots=True)
class Joined:
    run_id: int
    created: bool  # False: joined a run another process started
    worker: str


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


JoinMode = Literal["never", "allowed", "only"]
# (host, pid) -> whether that process exists; True when it cannot tell (another host).
Alive = Callable[[str, int], bool]


@dataclass(frozen=True, slots=True)
class Start:
    """No live run: mark ``abandon`` abandoned, create a run and take the lease, over from the
    dead run ``take_over`` when the lease still names one (None: the lease is free)."""

    take_over: int | None
    abandon: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class JoinRun:
    """Work the live run ``run_id`` as another worker (PostgreSQL)."""

    run_id: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """A live run holds the lease and this start may not join it: ``RunActive`` (exit 75)."""

    message: str


@dataclass(frozen=True, slots=True)
class NoRun:
    """``run --worker`` and nothing to join."""


LeaseDecision = Start | JoinRun | Refuse | NoRun


def _process_alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(lease: LeaseRow, now: int, alive: Alive = _process_alive) -> bool:
    """A live lease: not expired, and when its last holder is on this host, its process exists
    (a killed process is dead now, not at expiry; on another host only the expiry can tell)."""
    return lease.expires_at >= now and alive(lease.host, lease.pid)


def worker_beats(worker: WorkerRow, now: int, ttl_ms: int) -> bool:
    """The worker has not finished and beat within the last lease."""
    return worker.finished_at is None and now - worker.heartbeat_at < ttl_ms


def run_alive(
    lease: LeaseRow, workers: list[WorkerRow], now: int, ttl_ms: int, alive: Alive = _process_alive
) -> bool:
    """The lease's run lives while its holder does or any other worker of it still beats (the
    lease names whoever renewed it last, so its last renewer may have died)."""
    return holder_alive(lease, now, alive) or any(
        worker_beats(w, now, ttl_ms) and alive(w.host, w.pid) for w in workers
    )


def runs_dead(running: list[RunRow], now: int, ttl_ms: int, alive: Alive = _process_alive) -> list[int]:
    """Running runs to mark abandoned before a start: their process is gone or they are older than
    a lease. One whose process lives and which started a moment ago is a start racing ours (its
    lease not taken yet), not a dead one: the unique index on running runs settles that race."""
    return [r.id for r in running if not alive(r.host, r.pid) or now - r.started_at > ttl_ms]


def lease_decide(
    lease: LeaseRow | None,
    workers: list[WorkerRow],
    run: RunRow | None,
    running: list[RunRow],
    now: int,
    *,
    join: JoinMode,
    ttl_ms: int,
    alive: Alive = _process_alive,
) -> LeaseDecision:
    """Start, join or refuse, from the lease, the workers and row of its run, the running runs.

    ``join``: "never" (SQLite: a second run exits 75), "allowed" (PostgreSQL: join the active run
    as another worker), "only" (``run --worker``: join, or nothing). A lease that outlived its
    run (the run closed) or whose run has no live process or beating worker is taken over."""
    if lease is not None and run_alive(lease, workers, now, ttl_ms, alive):
        if join == "never":
            age = (now - lease.heartbeat_at) / 1000
            return Refuse(
                f"run {lease.run_id} is active (host {lease.host}, pid {lease.pid}, "
                f"heartbeat {age:.0f} s ago); try again when it has finished"
            )
        if run is not None and run.status == RunStatus.RUNNING.value:
            return JoinRun(lease.run_id)
    if join == "only":
        return NoRun()
    return Start(lease.run_id if lease is not None else None, tuple(runs_dead(running, now, ttl_ms, alive)))


async def run_start_or_join(
    store: Store, run_values: dict[str, Any], *, join: JoinMode, ttl_ms: int = LEASE_TTL_MS,
    clock: Clock = SYSTEM_CLOCK,
) -> Joined | None:
    """Carry out ``lease_decide``: the run this process works, or None (``run --worker`` and
    nothing active); ``RunActive`` when it must not join the live run.

    Processes starting at the same moment race for the run; with ``join`` "allowed" a loser joins
    the winner's run instead of giving up."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return await _start_or_join_once(store, run_values, join=join, ttl_ms=ttl_ms, clock=clock)
        except _LostRace as lost:
            if join == "never" or attempt == START_ATTEMPTS:
                raise RunActive(lost.message) from None
            # The winner takes its lease milliseconds after its run row: look again soon, while
            # its run is still there to join (a small one is over in a fraction of a second).
            await clock.sleep(START_RETRY_S * attempt)
    raise AssertionError("unreachable")


START_ATTEMPTS = 8
START_RETRY_S = 0.05


class _LostRace(RunActive):
    """Another process started a run between our look at the lease and our own start."""


async def _start_or_join_once(
    store: Store, run_values: dict[str, Any], *, join: JoinMode, ttl_ms: int, clock: Clock
) -> Joined | None:
    lease = await store.lease_get()
    workers = await store.workers_of_run(lease.run_id) if lease is not None else []
    run = await store.run_get(lease.run_id) if lease is not None else None
    running = await store.runs_running()
    decision = lease_decide(lease, workers, run, running, wall_ms(clock), join=join, ttl_ms=ttl_ms)
    if isinstance(decision, Refuse):
        raise RunActive(decision.message)
    if isinstance(decision, JoinRun):
        return Joined(decision.run_id, False, worker_id())
    if isinstance(decision, NoRun):
        return None
    if decision.abandon:
        await store.runs_abandon(list(decision.abandon), "abandoned: its process stopped without finishing")
        log_event(log, logging.WARNING, "enrichment_abandoned_runs", runs=",".join(map(str, decision.abandon)))
    try:
        run_id = await store.run_create(**run_values)
    except StoreConflict:  # the unique index on running runs: someone started one just now
        raise _LostRace("another run started at the same moment; try again when it has finished") from None
    holder = await store.lease_claim(
        run_id, socket.gethostname(), os.getpid(), ttl_ms, dead_run_id=decision.take_over
    )
    if holder.run_id != run_id:
        await store.run_update(run_id, status=RunStatus.CANCELLED.value, finished_at=wall_ms(clock),
                               error=f"lost the lease to run {holder.run_id}")
        raise _LostRace(f"run {holder.run_id} is active (host {holder.host}, pid {holder.pid})")
    return Joined(run_id, True, worker_id())


async def heartbeat(
    store: Store, run_id: int, worker: str, jobs_done: Callable[[], int], ttl_ms: int = LEASE_TTL_MS,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Renew the run lease and this worker's row until cancelled (three beats per lease)."""
    while True:
        await clock.sleep(ttl_ms / 3000)
        try:
            await store.lease_heartbeat(run_id, ttl_ms, socket.gethostname(), os.getpid())
            await store.worker_update(worker, heartbeat_at=wall_ms(clock), jobs_done=jobs_done())
        except StoreError as exc:  # a busy database must not kill the run; the next beat retries
            log_event(log, logging.WARNING, "enrichment_heartbeat_failed", run_id=run_id,
                      error=exc.message)


def run_status_of(counts: dict[str, tuple[int, int, int]]) -> RunStatus:
    total = sum(n for n, _f, _w in counts.values())
    succeeded = counts.get("succeeded", (0, 0, 0))[0]
    if total == succeeded:
        return RunStatus.SUCCEEDED
    return RunStatus.FAILED if succeeded == 0 else RunStatus.PARTIAL


async def run_close_if_done(
    store: Store,
    run_id: int,
    *,
    error: str | None,
    resilience: dict[str, Any] | None,
    retention_ms: int,
    on_closed: Callable[[RunStatus], Awaitable[None]] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> RunStatus | None:
    """Close the run when no job is left; None while other workers still hold jobs. Only one
    worker's close takes effect (the run must still be ``running``)."""
    counts = await store.jobs_counts(run_id)
    if any(status in JOB_UNFINISHED for status in counts):
        return None
    status = run_status_of(counts)
    closed = await _close(store, run_id, status, counts, error, resilience, wall_ms(clock))
    if closed:
        await store.requests_prune(wall_ms(clock) - retention_ms)
        if on_closed is not None:
            await on_closed(status)
    run = await store.run_get(run_id)
    return RunStatus(run.status) if run is not None else status


async def run_cancel(
    store: Store, run_id: int, worker: str, resilience: dict[str, Any] | None,
    ttl_ms: int = LEASE_TTL_MS, clock: Clock = SYSTEM_CLOCK,
) -> bool:
    """A graceful stop (SIGTERM, Ctrl-C). With other live workers, hand our jobs back to them;
    alone, cancel the run. True when the run was cancelled."""
    now = wall_ms(clock)
    others = [w for w in await store.workers_of_run(run_id) if w.id != worker and worker_beats(w, now, ttl_ms)]
    if others:
        await store.jobs_release(worker)
        return False
    await store.jobs_cancel_unfinished(run_id, "run cancelled")
    counts = await store.jobs_counts(run_id)
    await _close(store, run_id, RunStatus.CANCELLED, counts, "cancelled by a signal", resilience, wall_ms(clock))
    return True


async def _close(
    store: Store, run_id: int, status: RunStatus, counts: dict[str, tuple[int, int, int]],
    error: str | None, resilience: dict[str, Any] | None, now: int,
) -> bool:
    closed = await store.run_finalize(
        run_id,
        status=status.value,
        finished_at=now,
        jobs_total=sum(n for n, _f, _w in counts.values()),
        jobs_succeeded=counts.get("succeeded", (0, 0, 0))[0],
        jobs_failed=counts.get("failed", (0, 0, 0))[0],
        bars_fetched=sum(f for _n, f, _w in counts.values()),
        bars_written=sum(w for _n, _f, w in counts.values()),
        requests=await store.requests_count_for_run(run_id),
        error=error,
        resilience=json.dumps(resilience) if resilience is not None else None,
    )
    if closed:
        await store.lease_release(run_id)
        log_event(log, logging.INFO if status is RunStatus.SUCCEEDED else logging.WARNING,
                  "enrichment_run_finished", run_id=run_id, status=status.value,
                  jobs=sum(n for n, _f, _w in counts.values()),
                  bars_written=sum(w for _n, _f, w in counts.values()))
    return closed
