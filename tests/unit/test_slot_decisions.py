"""The claim slots' decisions, without a database, on the fake clock.

``slot_decide`` sees what a claim answered (the job, the jobs this worker holds that no slot
works on, the unfinished jobs of other workers) and the time; ``store_backoff`` and
``job_retry_delay`` say how long a slot waits after a failure, or that it stops. The driver,
``Runner``, is run over a store fake: its waits are the fake clock's, so a test of seconds of
polling runs in milliseconds and the waits it asked for can be read back.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from fakeclock import FakeClock

from enrichctl.errors import PermanentProviderError, RetryableProviderError, StoreUnavailable, TemporaryError
from enrichctl.pipeline.task import TaskContext
from enrichctl.store.rows import JobRow
from enrichctl.work.clock import wall_ms, within
from enrichctl.work.slots import (
    IDLE_POLL_S,
    ORPHAN_AFTER_MS,
    ORPHAN_POLL_S,
    STORE_RETRIES,
    GiveBack,
    Leave,
    Runner,
    RunnerConfig,
    Wait,
    Work,
    job_retry_delay,
    slot_decide,
    store_backoff,
)


def job(job_id: int = 1, touched: int = 0) -> JobRow:
    return JobRow(job_id, 7, "AAPL", "stock", "running", 1, touched, None, None, 0, 0, None, touched,
                  "me", touched + 60_000)


def test_a_claimed_job_is_worked_whatever_else_the_database_says() -> None:
    claimed = job()
    assert slot_decide(claimed, [], None, wall_ms(FakeClock())) == Work(claimed)


async def test_an_unheld_claim_goes_back_only_once_nobody_touched_it_for_a_while() -> None:
    clock = FakeClock()
    touched = wall_ms(clock)
    # Another slot's claim of a moment ago is not in the working set yet: look again soon.
    assert slot_decide(None, [(1, touched)], None, wall_ms(clock)) == Wait(ORPHAN_POLL_S)
    await clock.advance(ORPHAN_AFTER_MS / 1000)
    assert slot_decide(None, [(1, touched)], None, wall_ms(clock)) == Wait(ORPHAN_POLL_S)
    await clock.advance(0.001)
    later = wall_ms(clock)
    assert slot_decide(None, [(1, touched), (2, later)], None, later) == GiveBack((1,))


def test_an_idle_slot_waits_for_other_workers_jobs_and_leaves_when_none_is_left() -> None:
    now = wall_ms(FakeClock())
    assert slot_decide(None, [], 3, now) == Wait(IDLE_POLL_S)
    assert slot_decide(None, [], 0, now) == Leave()


def test_store_failures_back_off_doubling_up_to_ten_seconds_then_the_slot_gives_up() -> None:
    delays = [store_backoff(n) for n in range(1, STORE_RETRIES + 1)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert store_backoff(STORE_RETRIES + 1) is None


def retry(errors, attempt: int = 1, *, aborted: bool = False, out: bool = False) -> float | None:
    return job_retry_delay(errors, attempt, aborted=aborted, out_of_retries=out, ceiling=2.0,
                           jitter=lambda ceiling: ceiling)  # the top of the jitter's range


def test_a_passing_error_is_retried_with_exponential_backoff() -> None:
    errors = [RetryableProviderError("503"), StoreUnavailable("dropped"), TemporaryError("circuit open")]
    assert [retry(errors, n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


def test_an_open_circuit_makes_the_retry_wait_at_least_until_it_lets_calls_through() -> None:
    error = TemporaryError("circuit open")
    error.retry_in = 30.0  # type: ignore[attr-defined]
    assert retry([error]) == 30.0


def test_a_job_fails_at_once_when_an_error_will_not_pass_or_the_run_stops_or_retries_ran_out() -> None:
    assert retry([RetryableProviderError("503"), PermanentProviderError("404")]) is None
    assert retry([RetryableProviderError("503")], aborted=True) is None
    assert retry([RetryableProviderError("503")], out=True) is None


def test_the_jitter_draws_within_the_ceiling() -> None:
    rng = random.Random(1)
    delays = [job_retry_delay([RetryableProviderError("503")], 3, aborted=False, out_of_retries=False,
                              ceiling=1.0, jitter=lambda c: rng.uniform(0, c)) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1


class IdleStore:
    """A store whose run has no job left to claim: ``elsewhere`` says, claim after claim, how many
    unfinished jobs other workers hold; ``unheld`` the orphaned claims of this worker."""

    def __init__(self, clock: FakeClock, elsewhere: list[int], unheld: list[tuple[int, int]] = ()) -> None:
        self.clock = clock
        self.elsewhere = list(elsewhere)
        self.unheld = list(unheld)
        self.given_back: list[tuple[float, list[int]]] = []
        self.renewals: list[float] = []

    async def jobs_claim(self, run_id: int, worker: str, lease_ms: int, limit: int) -> list[JobRow]:
        return []

    async def jobs_claimed_unheld(self, run_id: int, worker: str, held: frozenset[int]):
        return list(self.unheld)

    async def jobs_give_back(self, worker: str, job_ids: list[int]) -> None:
        self.given_back.append((self.clock.monotonic(), job_ids))
        self.unheld = [(i, t) for i, t in self.unheld if i not in job_ids]

    async def jobs_unfinished_elsewhere(self, run_id: int, worker: str) -> int:
        return self.elsewhere.pop(0) if self.elsewhere else 0

    async def jobs_renew(self, worker: str, lease_ms: int) -> None:
        self.renewals.append(self.clock.monotonic())


def runner(store: IdleStore, clock: FakeClock, slots: int = 1, lease_ms: int = 6_000) -> Runner:
    ctx = TaskContext(store, None, None, None, None, 7, 0)  # type: ignore[arg-type]
    return Runner(ctx, RunnerConfig(slots, 2, 1.0, lease_ms), "me", None, [], clock=clock)  # type: ignore[arg-type]


async def test_an_idle_slot_polls_on_the_clock_while_other_workers_hold_jobs() -> None:
    clock = FakeClock()
    store = IdleStore(clock, elsewhere=[2, 2, 1])
    start = clock.monotonic()
    assert await runner(store, clock).run(7) == []
    assert clock.monotonic() - start == pytest.approx(3 * IDLE_POLL_S)
    assert clock.sleeps.count(IDLE_POLL_S) == 3
    assert store.renewals == [start + 2.0], "the claims are renewed three times a lease, on the clock"


async def test_an_orphaned_claim_is_handed_back_once_it_is_old_enough() -> None:
    clock = FakeClock()
    store = IdleStore(clock, elsewhere=[], unheld=[(5, wall_ms(clock))])
    start = clock.monotonic()
    await runner(store, clock).run(7)
    (when, ids), = store.given_back
    assert ids == [5]
    assert ORPHAN_AFTER_MS / 1000 < when - start <= ORPHAN_AFTER_MS / 1000 + 2 * ORPHAN_POLL_S


async def test_a_bounded_wait_times_out_on_the_clock_and_cancels_what_it_waited_for() -> None:
    clock = FakeClock()
    hung = asyncio.Event()
    cancelled = []

    async def bookkeeping() -> None:
        try:
            await hung.wait()
        except asyncio.CancelledError:
            cancelled.append(clock.monotonic())
            raise

    start = clock.monotonic()
    with pytest.raises(TimeoutError):
        await within(clock, bookkeeping(), 10.0)
    assert cancelled == [start + 10.0]
    assert await within(clock, asyncio.sleep(0, result="done"), 10.0) == "done"
