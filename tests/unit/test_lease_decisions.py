"""The run lease's start/join/take-over decision, without a database, on the fake clock.

``lease_decide`` sees what the database holds (the lease, its run's workers and row, the running
runs) and the time; the clock moves, the rows stay, and the decision changes as a person would
expect: a live run is joined or refused, a dead one is taken over and marked abandoned.
"""

from __future__ import annotations

import pytest
from fakeclock import FakeClock

from enrichctl.errors import EXIT_TEMPFAIL, RunActive
from enrichctl.store.rows import LeaseRow, RunRow, WorkerRow
from enrichctl.work.lease import JoinRun, NoRun, Refuse, Start, lease_decide

TTL_MS = 60_000
RUN = 7
HERE, THERE = "here", "there"
DEAD: set[tuple[str, int]] = set()  # the processes a test has killed


def alive(host: str, pid: int) -> bool:
    return (host, pid) not in DEAD


@pytest.fixture(autouse=True)
def _no_dead_processes():
    DEAD.clear()


def now_of(clock: FakeClock) -> int:
    return int(clock.wall() * 1000)


def lease(at: int, host: str = HERE, pid: int = 100, run_id: int = RUN) -> LeaseRow:
    """A lease renewed at ``at``, expiring one TTL later."""
    return LeaseRow("run", run_id, host, pid, at, at, at + TTL_MS)


def run_row(started: int, status: str = "running", host: str = HERE, pid: int = 100, run_id: int = RUN) -> RunRow:
    return RunRow(run_id, "cli", status, "demo", True, host, pid, started, None, "{}",
                  1, 0, 0, 0, 0, 0, None, None)


def worker(beat: int, host: str = THERE, pid: int = 200, finished: int | None = None) -> WorkerRow:
    return WorkerRow(f"{host}:{pid}", RUN, host, pid, beat, beat, finished, 0)


def decide(held: LeaseRow | None, workers, run, running, now: int, join: str) -> object:
    return lease_decide(held, workers, run, running, now, join=join, ttl_ms=TTL_MS, alive=alive)


async def test_a_free_lease_starts_a_run_and_takes_nothing_over() -> None:
    now = now_of(FakeClock())
    for join in ("never", "allowed"):
        assert decide(None, [], None, [], now, join) == Start(take_over=None, abandon=())
    assert decide(None, [], None, [], now, "only") == NoRun()


async def test_a_live_holder_is_joined_on_postgresql_and_refused_with_75_on_sqlite() -> None:
    clock = FakeClock()
    started = now_of(clock)
    held, run = lease(started), run_row(started)
    await clock.advance(30)  # half a lease: the holder beat 30 s ago
    now = now_of(clock)

    assert decide(held, [], run, [run], now, "allowed") == JoinRun(RUN)
    assert decide(held, [], run, [run], now, "only") == JoinRun(RUN)
    refused = decide(held, [], run, [run], now, "never")
    assert isinstance(refused, Refuse)
    assert refused.message == (f"run {RUN} is active (host {HERE}, pid 100, heartbeat 30 s ago); "
                               "try again when it has finished")
    assert RunActive(refused.message).exit_code == EXIT_TEMPFAIL == 75


async def test_an_expired_holder_is_taken_over_and_its_run_marked_abandoned() -> None:
    clock = FakeClock()
    started = now_of(clock)
    held, run = lease(started), run_row(started)
    await clock.advance(TTL_MS / 1000 + 1)  # no heartbeat for more than a lease
    now = now_of(clock)

    for join in ("never", "allowed"):
        assert decide(held, [], run, [run], now, join) == Start(take_over=RUN, abandon=(RUN,))
    assert decide(held, [], run, [run], now, "only") == NoRun()  # a worker starts nothing


async def test_a_killed_holder_on_this_host_is_taken_over_before_its_lease_expires() -> None:
    clock = FakeClock()
    started = now_of(clock)
    held, run = lease(started), run_row(started)
    await clock.advance(5)
    DEAD.add((HERE, 100))
    assert decide(held, [], run, [run], now_of(clock), "never") == Start(take_over=RUN, abandon=(RUN,))


async def test_a_run_lives_while_any_worker_beats() -> None:
    clock = FakeClock()
    started = now_of(clock)
    held, run = lease(started), run_row(started)
    await clock.advance(50)
    beating = worker(now_of(clock))  # another host's worker beat just now
    await clock.advance(30)  # the lease's last renewer stopped 80 s ago: the lease expired
    DEAD.add((HERE, 100))
    now = now_of(clock)

    assert decide(held, [beating], run, [run], now, "allowed") == JoinRun(RUN)
    assert isinstance(decide(held, [beating], run, [run], now, "never"), Refuse)
    finished = worker(beating.heartbeat_at, pid=201, finished=beating.heartbeat_at)
    assert decide(held, [finished], run, [run], now, "allowed") == Start(RUN, (RUN,))

    await clock.advance(TTL_MS / 1000)  # and now that worker has been silent for a lease too
    assert decide(held, [beating], run, [run], now_of(clock), "allowed") == Start(RUN, (RUN,))


async def test_a_lease_that_outlived_its_run_is_taken_over_rather_than_joined() -> None:
    clock = FakeClock()
    started = now_of(clock)
    held = lease(started)
    closed = run_row(started, status="succeeded")
    await clock.advance(10)
    assert decide(held, [], closed, [], now_of(clock), "allowed") == Start(take_over=RUN, abandon=())
    assert decide(held, [], closed, [], now_of(clock), "only") == NoRun()


async def test_a_start_racing_ours_is_not_abandoned_but_a_stale_or_dead_one_is() -> None:
    clock = FakeClock()
    old = run_row(now_of(clock), host=THERE, pid=300, run_id=3)
    await clock.advance(TTL_MS / 1000 + 1)
    racing = run_row(now_of(clock), host=THERE, pid=301, run_id=4)  # no lease yet, just started
    killed = run_row(now_of(clock), pid=302, run_id=5)
    DEAD.add((HERE, 302))
    await clock.advance(1)
    assert decide(None, [], None, [old, racing, killed], now_of(clock), "never") == Start(None, (3, 5))
