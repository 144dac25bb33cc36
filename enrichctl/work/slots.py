"""Works the jobs of a run: ``max_concurrent`` slots each claim the next job from the database,
plan its series (one task per timeframe) and run them.

Jobs are claimed, not handed out in memory, so several workers (processes, hosts) can share one
run: each claim is a lease this worker renews; a worker that dies loses its claims when the lease
lapses and another worker finishes its jobs. A job whose tasks fail with a retryable error is
retried up to ``max_retries`` times with exponential backoff (only its unfinished tasks; finished
ones are committed). Every state change is persisted:
pending -> running -> succeeded | failed | retrying (-> running ...).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from enrichctl.domain import AssetClass, Instrument, JobStatus, RequestRecord
from enrichctl.errors import (
    ConfigError,
    EnrichError,
    ProviderError,
    ProviderUnavailable,
    StoreError,
    StoreFault,
    TemporaryError,
    UnknownTickerError,
)
from enrichctl.logs import get_logger, log_event
from enrichctl.pipeline.plan import JobPlan, Mode, SeriesPlan
from enrichctl.pipeline.task import TaskContext, TaskOutcome, series_update
from enrichctl.resilience.clock import Clock
from enrichctl.store.repo import JobEnd
from enrichctl.store.rows import JobRow
from enrichctl.work.clock import SYSTEM_CLOCK, wall_ms

log = get_logger("runner")

ProgressHook = Callable[[str, dict[str, Any]], None]


@dataclass(slots=True)
class JobResult:
    symbol: str
    status: JobStatus
    attempts: int
    bars_fetched: int = 0
    bars_written: int = 0
    up_to_date: int = 0
    readjusted: int = 0
    issues: int = 0
    error: str | None = None
    duration_ms: float = 0.0
    actions: list[str] = field(default_factory=list)  # corporate actions that caused refetches

    def doc(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "status": self.status.value,
            "attempts": self.attempts,
            "bars_fetched": self.bars_fetched,
            "bars_written": self.bars_written,
            "series_up_to_date": self.up_to_date,
            "series_readjusted": self.readjusted,
            "issues": self.issues,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 1),
            "actions": sorted(set(self.actions)),
        }

    def tally(self, plan: SeriesPlan, outcome: TaskOutcome) -> None:
        """Count one finished task."""
        self.bars_fetched += outcome.bars_fetched
        self.bars_written += outcome.bars_written
        self.issues += outcome.issues
        self.readjusted += int(outcome.readjusted)
        if outcome.action is not None:
            self.actions.append(outcome.action)
        self.up_to_date += int(plan.mode is Mode.UP_TO_DATE)

    def end_values(self, now: int) -> dict[str, Any]:
        """The job row's last update, at ``now``."""
        return {
            "status": self.status.value, "finished_at": now, "duration_ms": self.duration_ms,
            "bars_fetched": self.bars_fetched, "bars_written": self.bars_written,
            "lease_expires_at": None,
            "error": self.error if self.status is JobStatus.FAILED else None,
        }


@dataclass(slots=True)
class RunnerConfig:
    max_concurrent: int
    max_retries: int
    retry_delay: float
    lease_ms: int = 60_000  # a job claim lapses this long after the last renewal
    rng: random.Random = field(default_factory=random.Random)


class RunAborted(Exception):
    """A configuration error (e.g. the provider refused the key) ends the whole run."""

    def __init__(self, error: ConfigError) -> None:
        super().__init__(error.message)
        self.error = error


# The provider calls of the task running in this asyncio task (each slot is one): a task commits
# exactly its own calls with its data, whatever the other slots do meanwhile.
_TASK_REQUESTS: ContextVar[list[RequestRecord] | None] = ContextVar("task_requests", default=None)


def request_sink(outside_tasks: list[RequestRecord]) -> Callable[[RequestRecord], None]:
    """The sink to give the provider: calls made inside a task go to that task, others (the
    grouped-daily prefetch) to ``outside_tasks``, committed with the next task."""

    def sink(record: RequestRecord) -> None:
        mine = _TASK_REQUESTS.get()
        (mine if mine is not None else outside_tasks).append(record)

    return sink


# (instrument, attempts the job already had) -> its plan
JobPlanner = Callable[[Instrument, int], Awaitable[JobPlan]]

# How often an idle slot looks again for work while other workers still hold jobs.
IDLE_POLL_S = 1.0
# A job this worker claimed but no slot works on, untouched this long, is an orphan to give back.
ORPHAN_AFTER_MS = 3_000
ORPHAN_POLL_S = 0.05  # a claim in flight shows up in _working within moments
# Consecutive database failures of a slot's bookkeeping before the run gives up.
STORE_RETRIES = 5


# -- the slot's decisions, pure: what it does next from what the database answered and the time --


@dataclass(frozen=True, slots=True)
class Work:
    """Work the job just claimed."""

    job: JobRow


@dataclass(frozen=True, slots=True)
class GiveBack:
    """Hand back jobs this worker claimed that no slot works on and nobody touched for a while."""

    job_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do now: look again in ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Leave:
    """Nothing is left for this worker: the slot ends."""


SlotDecision = Work | GiveBack | Wait | Leave


def slot_decide(
    job: JobRow | None, unheld: list[tuple[int, int]], elsewhere: int | None, now: int
) -> SlotDecision:
    """After a claim: ``job`` the claimed job (None: nothing claimable), ``unheld`` (id, last
    touched) of jobs this worker claimed that no slot works on, ``elsewhere`` how many unfinished
    jobs other workers hold (asked only when there is no job and nothing unheld), ``now`` in ms.

    Unheld jobs (a slot's bookkeeping failed, or a claim's reply was lost) would otherwise stay
    claimed, and renewed, for ever; but a claim another slot made a moment ago is not in the
    working set yet, so only jobs untouched for ``ORPHAN_AFTER_MS`` go back, and the slot looks
    again soon. Our own unfinished jobs finish in the other slots; only jobs other workers hold
    are worth waiting for (their claims may lapse and become ours)."""
    if job is not None:
        return Work(job)
    if unheld:
        stale = tuple(i for i, touched in unheld if now - touched > ORPHAN_AFTER_MS)
        return GiveBack(stale) if stale else Wait(ORPHAN_POLL_S)
    if not elsewhere:
        return Leave()
    return Wait(IDLE_POLL_S)


def store_backoff(failures: int) -> float | None:
    """Seconds a slot waits after its ``failures``-th consecutive bookkeeping failure (0.5 s
    doubling, at most 10 s); None once ``STORE_RETRIES`` are used up: the run gives up."""
    if failures > STORE_RETRIES:
        return None
    return min(0.5 * 2 ** failures, 10.0)


def job_retry_delay(
    errors: list[EnrichError], attempt: int, *, aborted: bool, out_of_retries: bool, ceiling: float,
    jitter: Callable[[float], float],
) -> float | None:
    """Seconds before a job's next attempt after its tasks failed with ``errors`` in this
    worker's ``attempt``-th try of it; None: it fails now (the run aborted, an error that will
    not pass by itself, or no retry left). Exponential with full jitter, ``jitter(ceiling *
    2**(attempt-1))``, and never sooner than an open circuit says it lets calls through."""
    retryable = all(getattr(e, "retryable", False) or isinstance(e, StoreError | TemporaryError) for e in errors)
    if aborted or not retryable or out_of_retries:
        return None
    wait_at_least = max((getattr(e, "retry_in", 0.0) for e in errors), default=0.0)
    return max(jitter(ceiling * 2 ** (attempt - 1)), wait_at_least)


class Runner:
    def __init__(
        self,
        ctx: TaskContext,
        config: RunnerConfig,
        worker: str,
        plan_job: JobPlanner,
        requests: list[RequestRecord],
        progress: ProgressHook | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ctx = ctx
        self.clock = clock
        self.config = config
        self.worker = worker
        self.plan_job = plan_job
        self.requests = requests  # filled by the provider's sink; flushed after every task
        self.progress = progress or (lambda _kind, _data: None)
        # What ended the whole run: a configuration error, a provider that is not there, or a
        # storage fault no retry mends (a read-only file, a full disk).
        self.abort: ConfigError | ProviderUnavailable | StoreFault | None = None
        self.results: list[JobResult] = []
        self._working: set[int] = set()  # ids of the jobs claimed and not finished yet
        self._claimed: deque[JobRow] = deque()  # claimed, waiting for a free slot
        self._claiming = asyncio.Lock()

    async def run(self, run_id: int) -> list[JobResult]:
        """Work until no job of the run is left to claim and none is held by a live worker."""
        renewer = asyncio.create_task(self._renew())
        slots = [asyncio.create_task(self._slot(run_id)) for _ in range(self.config.max_concurrent)]
        try:
            await asyncio.gather(*slots)
        finally:
            for task in (*slots, renewer):
                task.cancel()
            await asyncio.gather(*slots, renewer, return_exceptions=True)
        await self._give_back_claimed()
        if self.abort is not None:
            await self.ctx.store.jobs_fail_pending(run_id, self.abort.message)
        return self.results

    async def _slot(self, run_id: int) -> None:
        failures = 0
        while self.abort is None:
            try:
                if not await self._claim_and_work(run_id):
                    return
                failures = 0
            except StoreFault as exc:
                self.abort = exc  # a read-only file or a full disk: every other job meets it too
                return
            except StoreError as exc:
                # A dropped connection or a busy database: its bookkeeping failed, not the job's
                # data (that commits atomically). Back off and go on; the job it held is handed
                # back (now, or before the last slot leaves) so that a worker redoes it.
                failures += 1
                log_event(log, logging.WARNING, "enrichment_store_error", run_id=run_id,
                          attempt=failures, error=exc.message)
                if (delay := store_backoff(failures)) is None:
                    raise
                await self.clock.sleep(delay)

    async def _claim_and_work(self, run_id: int) -> bool:
        """Claim and work one job; False when there is nothing left for this worker."""
        store = self.ctx.store
        # Each question is asked only when the answers before it leave the slot without work.
        job = await self._next_claimed(run_id)
        unheld = [] if job is not None else await store.jobs_claimed_unheld(
            run_id, self.worker, frozenset(self._working))
        elsewhere = None if job is not None or unheld else await store.jobs_unfinished_elsewhere(
            run_id, self.worker)
        decision = slot_decide(job, unheld, elsewhere, wall_ms(self.clock))
        if isinstance(decision, Leave):
            return False
        if isinstance(decision, Wait):
            await self.clock.sleep(decision.seconds)
            return True
        if isinstance(decision, GiveBack):
            await store.jobs_give_back(self.worker, list(decision.job_ids))
            return True
        job = decision.job  # counted in _working from its claim on (_next_claimed)
        try:
            # The claim started the job's next attempt (counted it, marked it running).
            before = job.attempts - 1
            plan = await self.plan_job(Instrument(job.symbol, AssetClass(job.asset_class)), before)
            result = await self._job(job.id, before, plan)
        finally:
            self._working.discard(job.id)
        if result is not None:
            self.results.append(result)
            self.progress("job_done", {"result": result})
        return True

    async def _next_claimed(self, run_id: int) -> JobRow | None:
        """The next job this worker claimed. Claims come a slot's worth at a time (one
        transaction for ``max_concurrent`` jobs); a claimed job counts as worked on from the
        claim on, so it is never mistaken for an orphan while it waits for a slot."""
        if not self._claimed:
            async with self._claiming:
                if not self._claimed:
                    claimed = await self.ctx.store.jobs_claim(
                        run_id, self.worker, self.config.lease_ms, self.config.max_concurrent)
                    self._working.update(j.id for j in claimed)
                    self._claimed.extend(claimed)
        return self._claimed.popleft() if self._claimed else None

    async def _give_back_claimed(self) -> None:
        """Jobs claimed but never started (the run is ending early) go back to pending."""
        if not self._claimed:
            return
        ids = [j.id for j in self._claimed]
        self._claimed.clear()
        self._working.difference_update(ids)
        try:
            await self.ctx.store.jobs_give_back(self.worker, ids)
        except StoreError as exc:  # their leases lapse; another worker or run takes them
            log_event(log, logging.WARNING, "enrichment_give_back_failed", error=exc.message)

    async def _renew(self) -> None:
        while True:
            await self.clock.sleep(self.config.lease_ms / 3000)  # three renewals per lease
            try:
                await self.ctx.store.jobs_renew(self.worker, self.config.lease_ms)
            except StoreError as exc:  # the next renewal retries; a lapse only lets others help
                log_event(log, logging.WARNING, "enrichment_lease_renew_failed", error=exc.message)

    async def _job(self, job_id: int, attempts_before: int, job: JobPlan) -> JobResult | None:
        """Run one claimed job to its end; None when another worker took it over meanwhile."""
        symbol = job.instrument.symbol
        store = self.ctx.store
        result = JobResult(symbol, JobStatus.RUNNING, attempts_before + 1)  # the claim's attempt
        remaining = list(job.tasks)
        started = self.clock.monotonic()
        ended = False  # the job's end was committed with its last task
        while True:
            if result.attempts > attempts_before + 1 and not await store.job_update_claimed(
                job_id, self.worker, status=JobStatus.RUNNING.value, attempts=result.attempts
            ):
                return None
            log_event(log, logging.INFO, "enrichment_job_started", run_id=self.ctx.run_id,
                      symbol=symbol, attempt=result.attempts,
                      timeframes=",".join(t.series.timeframe.value for t in remaining))
            failed: list[tuple[SeriesPlan, EnrichError]] = []
            for index, plan in enumerate(remaining):
                # The last task of an attempt with no failure so far ends the job if it succeeds:
                # its commit carries the job's end (one transaction fewer per job).
                closing = result if index == len(remaining) - 1 and not failed else None
                try:
                    outcome, ended = await self._task(job_id, plan, result.attempts, closing, started)
                except (ConfigError, ProviderUnavailable, StoreFault) as exc:
                    self.abort = exc
                    failed.append((plan, exc))
                    break
                except (ProviderError, StoreError, TemporaryError) as exc:
                    # TemporaryError: an open circuit or a full bulkhead; it passes by itself.
                    failed.append((plan, exc))
                    continue
                result.tally(plan, outcome)
            if not failed:
                result.status = JobStatus.SUCCEEDED
                result.error = None  # an earlier attempt's error is history now
                break
            error = "; ".join(f"{p.series}: {e.message}" for p, e in failed)
            result.error = error
            delay = job_retry_delay(
                [e for _, e in failed], result.attempts - attempts_before, aborted=self.abort is not None,
                out_of_retries=result.attempts > self.config.max_retries,
                ceiling=self.config.retry_delay, jitter=self._jitter,
            )
            if delay is None:
                result.status = JobStatus.FAILED
                break
            await store.job_update_claimed(job_id, self.worker, status=JobStatus.RETRYING.value,
                                           error=error)
            log_event(log, logging.WARNING, "enrichment_retry", run_id=self.ctx.run_id, symbol=symbol,
                      attempt=result.attempts, delay_s=round(delay, 2), error=error)
            await self.clock.sleep(delay)
            remaining = [p for p, _ in failed]
            result.attempts += 1
        if not ended:
            result.duration_ms = (self.clock.monotonic() - started) * 1000
            await store.job_update_claimed(job_id, self.worker, **result.end_values(wall_ms(self.clock)))
        if result.status is JobStatus.SUCCEEDED:
            log_event(log, logging.INFO, "enrichment_completed", run_id=self.ctx.run_id,
                      symbol=symbol, bars_fetched=result.bars_fetched,
                      bars_written=result.bars_written, attempts=result.attempts,
                      duration_ms=round(result.duration_ms, 1))
        else:
            log_event(log, logging.ERROR, "enrichment_failed", run_id=self.ctx.run_id,
                      symbol=symbol, attempts=result.attempts, error=result.error)
        return result

    async def _task(
        self, job_id: int, plan: SeriesPlan, attempt: int, closing: JobResult | None = None,
        started: float = 0.0,
    ) -> tuple[TaskOutcome, bool]:
        """Run and commit one task; with ``closing`` (the job's result so far) a success also
        commits the job's end, and the flag says so."""
        store = self.ctx.store
        series = plan.series
        row = {
            "job_id": job_id, "run_id": self.ctx.run_id, "symbol": series.symbol,
            "timeframe": series.timeframe.value, "attempt": attempt, "range_start": plan.start,
            "range_end": plan.end if plan.start is not None else None,
            "full_refresh": plan.mode in (Mode.FULL, Mode.NEW), "started_at": wall_ms(self.clock),
        }
        mine: list[RequestRecord] = []
        token = _TASK_REQUESTS.set(mine)
        try:
            outcome, write = await series_update(self.ctx, plan)
        except EnrichError as exc:
            failed = {**row, "status": JobStatus.FAILED.value, "finished_at": wall_ms(self.clock),
                      "error": exc.message, "bars_fetched": 0, "bars_written": 0,
                      "indicator_values": 0}
            await store.task_record(failed, mine + self._drain_requests())
            if isinstance(exc, UnknownTickerError):
                raise  # no series is kept for a ticker the provider does not know
            await store.series_touch(series, self.ctx.provider.name, self.ctx.provider.synthetic,
                                     last_attempt_at=wall_ms(self.clock), last_error=exc.message)
            raise
        finally:
            _TASK_REQUESTS.reset(token)
        row.update(
            status=JobStatus.SUCCEEDED.value, finished_at=wall_ms(self.clock),
            bars_fetched=outcome.bars_fetched, bars_written=outcome.bars_written,
            indicator_values=outcome.indicator_values, fetch_ms=outcome.fetch_ms,
            compute_ms=outcome.compute_ms, compute_ok=None if outcome.compute_ms is None else True,
        )
        # The task's record and the provider calls it made commit with its data, or alone.
        requests = mine + self._drain_requests()
        job_end = None
        if closing is not None:
            # What the job will be once this commits; ``closing`` itself is tallied after it.
            end = replace(closing, actions=list(closing.actions), status=JobStatus.SUCCEEDED, error=None)
            end.tally(plan, outcome)
            end.duration_ms = (self.clock.monotonic() - started) * 1000
            job_end = JobEnd(job_id, self.worker, end.end_values(wall_ms(self.clock)))
        if write is not None:
            await store.series_commit(write, task=row, requests=requests, job=job_end)
        else:
            await store.task_record(row, requests, job_end)
        if closing is not None:
            closing.duration_ms = job_end.values["duration_ms"]
        self.progress("task_done", {"series": str(series), "outcome": outcome})
        return outcome, job_end is not None

    def _drain_requests(self) -> list[RequestRecord]:
        """Calls made outside any task (the grouped prefetch), committed with the next task."""
        batch, self.requests[:] = list(self.requests), []
        return batch

    def _jitter(self, ceiling: float) -> float:
        """Full jitter: uniform(0, ceiling)."""
        return self.config.rng.uniform(0, ceiling)
