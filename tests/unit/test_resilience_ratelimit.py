"""The rate limiter: never more than `rate` admissions in any rolling interval, FIFO, pausable."""

from __future__ import annotations

import asyncio
import random
from email.utils import formatdate

import pytest
from fakeclock import FakeClock

from enrichctl.resilience.ratelimit import RateLimiter, parse_retry_after

MINUTE = 60.0


def max_in_any_window(times: list[float], interval: float) -> int:
    """The most admissions in [t, t + interval) over every admission time t."""
    ordered = sorted(times)
    return max((sum(1 for s in ordered if t <= s < t + interval) for t in ordered), default=0)


async def admit_at(
    clock: FakeClock, limiter: RateLimiter, arrive_after: float, out: list[float]
) -> None:
    await clock.sleep(arrive_after)
    await limiter.acquire()
    out.append(clock.monotonic())


@pytest.mark.parametrize("seed", range(12))
async def test_never_more_than_rate_in_any_rolling_window_for_random_arrivals(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    rate = rng.choice([1, 2, 5, 7])
    limiter = RateLimiter("p", clock, rate=rate, interval=MINUTE, burst=rng.randint(1, rate))
    admitted: list[float] = []
    # Clumps and gaps: arrivals bunch at a few instants and trickle in between.
    arrivals = [rng.choice([0.0, 59.9, 60.0, 119.5]) + rng.expovariate(1 / 20) for _ in range(40)]
    await asyncio.gather(*(admit_at(clock, limiter, a, admitted) for a in arrivals))
    assert len(admitted) == 40
    assert max_in_any_window(admitted, MINUTE) <= rate
    assert limiter.snapshot()["waiting"] == 0


async def test_a_full_burst_is_not_followed_by_a_refill_inside_the_same_window() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    limiter = RateLimiter("polygon", clock, rate=5, interval=MINUTE, burst=5)
    admitted: list[float] = []
    await asyncio.gather(*(admit_at(clock, limiter, 0.0, admitted) for _ in range(5)))
    # A token bucket would have refilled 2.5 tokens by t+30 s; the window log admits nothing
    # until the first admission leaves the window at exactly t+60 s.
    await asyncio.gather(*(admit_at(clock, limiter, 30.0, admitted) for _ in range(5)))
    assert [t - start for t in admitted] == [0.0] * 5 + [60.0] * 5


async def test_burst_one_spreads_admissions_evenly() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    limiter = RateLimiter("p", clock, rate=5, interval=MINUTE, burst=1)
    admitted: list[float] = []
    await asyncio.gather(*(admit_at(clock, limiter, 0.0, admitted) for _ in range(4)))
    assert [round(t - start, 6) for t in admitted] == [0.0, 12.0, 24.0, 36.0]


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = FakeClock()
    limiter = RateLimiter("p", clock, rate=2, interval=MINUTE)
    order: list[int] = []

    async def caller(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    tasks = []
    for i in range(9):
        tasks.append(asyncio.ensure_future(caller(i)))
        await asyncio.sleep(0)  # arrive one after the other
    await asyncio.gather(*tasks)
    assert order == list(range(9))


@pytest.mark.parametrize("cancelled", ["head of the line", "middle of the line"])
async def test_a_cancelled_waiter_takes_nothing_and_the_next_one_proceeds(cancelled: str) -> None:
    clock = FakeClock(auto_advance=False)
    start = clock.monotonic()
    limiter = RateLimiter("p", clock, rate=1, interval=MINUTE)
    await limiter.acquire()
    admitted: dict[str, float] = {}

    async def caller(name: str) -> None:
        await limiter.acquire()
        admitted[name] = clock.monotonic() - start

    b = asyncio.ensure_future(caller("b"))
    await asyncio.sleep(0)
    c = asyncio.ensure_future(caller("c"))
    await asyncio.sleep(0)
    d = asyncio.ensure_future(caller("d"))
    await clock.advance(10.0)
    assert limiter.snapshot()["waiting"] == 3
    (b if cancelled == "head of the line" else c).cancel()
    await clock.advance(50.0)
    assert limiter.snapshot()["waiting"] == 1
    await clock.advance(60.0)
    await asyncio.gather(b, c, d, return_exceptions=True)
    survivor = "c" if cancelled == "head of the line" else "b"
    assert admitted == {survivor: 60.0, "d": 120.0}


async def test_a_pause_holds_every_caller_until_it_ends_even_with_tokens_left() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    limiter = RateLimiter("p", clock, rate=100, interval=MINUTE, retry_after_cap=300.0)
    assert limiter.pause(30.0) == 30.0
    assert limiter.pause(5.0) == 5.0  # a shorter pause does not shorten the one in force
    snap = limiter.snapshot()
    assert snap["tokens"] == 0
    assert snap["paused_for"] == 30.0
    assert snap["paused_until"] == pytest.approx(clock.wall() + 30.0)
    admitted: list[float] = []
    await asyncio.gather(*(admit_at(clock, limiter, 1.0, admitted) for _ in range(3)))
    assert [t - start for t in admitted] == [30.0] * 3
    assert limiter.snapshot()["paused_until"] is None


@pytest.mark.parametrize(
    ("asked", "applied"), [(None, 0.0), (-5.0, 0.0), (0.0, 0.0), (9999.0, 300.0)]
)
async def test_pause_ignores_nonsense_and_is_capped(asked: float | None, applied: float) -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter("p", clock, rate=5, retry_after_cap=300.0)
    assert limiter.pause(asked) == applied
    assert limiter.paused_for() == applied


async def test_unlimited_admits_everything_at_once_but_still_honours_a_pause() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    limiter = RateLimiter("p", clock, rate=0)
    admitted: list[float] = []
    await asyncio.gather(*(admit_at(clock, limiter, 0.0, admitted) for _ in range(1000)))
    assert set(admitted) == {start}
    assert limiter.snapshot()["tokens"] is None
    limiter.pause(7.0)
    await limiter.acquire()
    assert clock.monotonic() - start == 7.0


@pytest.mark.parametrize("tokens", [0, 4])
async def test_asking_for_more_than_the_capacity_fails_at_once(tokens: int) -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter("p", clock, rate=5, burst=3)
    with pytest.raises(ValueError):
        await limiter.acquire(tokens)
    assert limiter.snapshot()["tokens"] == 3  # nothing was taken


async def test_snapshot_reports_tokens_waiting_and_pause() -> None:
    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter("polygon", clock, rate=5, interval=MINUTE)
    await limiter.acquire(3)
    waiter = asyncio.ensure_future(limiter.acquire(3))
    await asyncio.sleep(0)
    snap = limiter.snapshot()
    assert (snap["tokens"], snap["waiting"], snap["paused_until"]) == (2, 1, None)
    await clock.advance(MINUTE)
    await waiter
    assert limiter.snapshot()["tokens"] == 2
    assert limiter.snapshot()["admitted"] == 6


@pytest.mark.parametrize(
    "bad", [dict(rate=-1), dict(rate=5, burst=6), dict(rate=5, burst=0), dict(rate=5, interval=0)]
)
def test_impossible_settings_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RateLimiter("p", FakeClock(), **bad)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        (formatdate(NOW - 10, usegmt=True), None),  # a date in the past
        ("Mon, 99 Foo 2023 25:61:00 GMT", None),
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_parse_retry_after_is_capped() -> None:
    assert parse_retry_after("86400", NOW, cap=300.0) == 300.0
    assert parse_retry_after(formatdate(NOW + 3600, usegmt=True), NOW, cap=300.0) == 300.0
