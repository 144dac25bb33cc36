"""The retry policy: bounded attempts, full-jitter backoff, Retry-After, what it never retries."""

from __future__ import annotations

import asyncio
import itertools
import random

import backoff
import pytest
from fakeclock import FakeClock

from enrichctl.errors import (
    PermanentProviderError,
    ProviderAuthError,
    RetryableProviderError,
    StoreError,
    StoreFault,
    StoreUnavailable,
)
from enrichctl.resilience.breaker import CircuitOpen
from enrichctl.resilience.retry import RetryPolicy, current_attempt


class Flaky:
    """Fails with the given errors in turn, then returns "bars"; records each attempt's number."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.attempts: list[int] = []

    async def __call__(self) -> str:
        self.attempts.append(current_attempt())
        if self.errors:
            raise self.errors.pop(0)
        return "bars"


def unavailable(retry_after: float | None = None) -> RetryableProviderError:
    return RetryableProviderError("HTTP 503", status=503, retry_after=retry_after)


def policy(clock: FakeClock, **kwargs: object) -> RetryPolicy:
    params: dict[str, object] = dict(
        max_retries=3, initial_delay=1.0, max_delay=60.0, backoff_multiplier=2.0
    )
    params.update(kwargs)
    params.setdefault("rng", random.Random(7))
    return RetryPolicy("polygon", clock, **params)


@pytest.mark.parametrize("max_retries", [0, 1, 4])
async def test_max_retries_k_gives_at_most_k_plus_one_attempts(max_retries: int) -> None:
    clock = FakeClock()
    retry = policy(clock, max_retries=max_retries)
    fn = Flaky(*[unavailable() for _ in range(10)])
    with pytest.raises(RetryableProviderError):
        await retry.call(fn)
    assert fn.attempts == list(range(1, max_retries + 2))
    snap = retry.snapshot()
    assert (snap["attempts"], snap["retries"], snap["exhausted"]) == (
        max_retries + 1,
        max_retries,
        1,
    )


async def test_succeeds_after_transient_failures_and_reports_each_retry() -> None:
    clock = FakeClock()
    retry = policy(clock)
    fn = Flaky(unavailable(), unavailable())
    heard: list[tuple[int, float, BaseException]] = []
    assert await retry.call(fn, on_retry=lambda a, d, e: heard.append((a, d, e))) == "bars"
    assert fn.attempts == [1, 2, 3]
    assert [a for a, _, _ in heard] == [1, 2]
    assert [d for _, d, _ in heard] == clock.sleeps
    assert all(isinstance(e, RetryableProviderError) for _, _, e in heard)


async def test_delays_are_full_jitter_under_an_exponential_ceiling_capped_at_max_delay() -> None:
    clock = FakeClock()
    retry = policy(clock, max_retries=12, initial_delay=0.5, max_delay=10.0, rng=random.Random(42))
    with pytest.raises(RetryableProviderError):
        await retry.call(Flaky(*[unavailable() for _ in range(13)]))
    same = random.Random(42)
    expected = [same.uniform(0, min(10.0, 0.5 * 2.0**n)) for n in range(12)]
    assert clock.sleeps == expected
    assert all(d <= 10.0 for d in clock.sleeps)
    assert max(clock.sleeps[6:]) > 5.0  # later delays really reach up towards the cap


async def test_a_huge_retry_number_does_not_overflow() -> None:
    retry = policy(FakeClock(), max_delay=60.0)
    assert retry.backoff_ceiling(5000) == 60.0


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(30.0, 30.0), (900.0, 120.0)],  # longer than the jitter wins; capped at retry_after_cap
)
async def test_retry_after_wins_when_longer(retry_after: float, expected: float) -> None:
    clock = FakeClock()
    retry = policy(clock, initial_delay=1.0, max_delay=2.0, retry_after_cap=120.0)
    assert await retry.call(Flaky(unavailable(retry_after=retry_after))) == "bars"
    assert clock.sleeps == [expected]


async def test_a_shorter_retry_after_does_not_shorten_the_backoff() -> None:
    clock = FakeClock()
    retry = policy(clock, initial_delay=50.0, max_delay=50.0, rng=random.Random(1))
    await retry.call(Flaky(unavailable(retry_after=0.001)))
    assert clock.sleeps == [random.Random(1).uniform(0, 50.0)]


@pytest.mark.parametrize(
    "error",
    [
        asyncio.CancelledError(),
        CircuitOpen("polygon", 12.3),
        PermanentProviderError("HTTP 404", status=404),
        ProviderAuthError("HTTP 401: key refused"),
        ValueError("a bug of ours"),
    ],
    ids=["cancelled", "circuit-open", "permanent-4xx", "auth", "bug"],
)
async def test_never_retries_what_a_retry_cannot_fix(error: BaseException) -> None:
    clock = FakeClock()
    retry = policy(clock, max_retries=5)
    fn = Flaky(error)
    with pytest.raises(type(error)):
        await retry.call(fn)
    assert fn.attempts == [1]
    assert clock.sleeps == []


async def test_cancelling_during_the_backoff_sleep_stops_at_once() -> None:
    clock = FakeClock(auto_advance=False)
    retry = policy(clock, initial_delay=10.0, max_delay=10.0, max_retries=5)
    fn = Flaky(*[unavailable() for _ in range(5)])
    task = asyncio.ensure_future(retry.call(fn))
    await asyncio.sleep(0)
    assert clock.sleeping == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await clock.advance(3600.0)
    assert fn.attempts == [1]
    assert clock.sleeping == 0


def expo_ceilings(n: int, *, initial: float, multiplier: float, cap: float) -> list[float]:
    gen = backoff.expo(base=multiplier, factor=initial, max_value=cap)
    next(gen)
    return [next(gen) for _ in range(n)]


async def test_the_ceilings_are_backoffs_exponential_schedule_and_restart_with_each_call() -> None:
    clock = FakeClock()
    retry = policy(clock, max_retries=8, initial_delay=0.25, max_delay=5.0, backoff_multiplier=3.0,
                   rng=random.Random(5))
    expected = expo_ceilings(8, initial=0.25, multiplier=3.0, cap=5.0)
    assert list(itertools.islice(retry.ceilings(), 8)) == expected
    for _ in range(2):  # a second call starts again from the first, shortest delay
        clock.sleeps.clear()
        with pytest.raises(RetryableProviderError):
            await retry.call(Flaky(*[unavailable() for _ in range(9)]))
        assert len(clock.sleeps) == 8
        assert all(0.0 <= d <= c for d, c in zip(clock.sleeps, expected, strict=True))


async def test_without_an_rng_the_jitter_is_backoffs_full_jitter() -> None:
    clock = FakeClock()
    retry = RetryPolicy("polygon", clock, max_retries=3, initial_delay=1.0, max_delay=8.0)
    state = random.getstate()
    try:
        random.seed(11)  # backoff.full_jitter draws from the module-level generator
        with pytest.raises(RetryableProviderError):
            await retry.call(Flaky(*[unavailable() for _ in range(4)]))
        random.seed(11)
        expected = [backoff.full_jitter(c) for c in (1.0, 2.0, 4.0)]
    finally:
        random.setstate(state)
    assert clock.sleeps == expected


def test_a_zero_initial_delay_never_waits_even_after_many_retries() -> None:
    retry = policy(FakeClock(), initial_delay=0.0, max_delay=60.0)
    assert retry.backoff_ceiling(0) == 0.0
    assert retry.backoff_ceiling(5000) == 0.0


async def test_a_retryable_predicate_chooses_what_is_tried_again() -> None:
    """The store's bookkeeping retries its own errors, never a permanent fault, on the same delays."""
    def store_retryable(exc: BaseException) -> bool:
        return isinstance(exc, StoreError) and not isinstance(exc, StoreFault)

    clock = FakeClock()
    retry = policy(clock, retryable=store_retryable, max_delay=5.0)
    dropped = Flaky(StoreUnavailable("connection dropped"), StoreUnavailable("connection dropped"))
    assert await retry.call(dropped) == "bars" and dropped.attempts == [1, 2, 3]
    assert len(clock.sleeps) == 2 and 0 < clock.sleeps[0] <= 1.0 and 0 < clock.sleeps[1] <= 2.0
    fault = Flaky(StoreFault("disk full"))
    with pytest.raises(StoreFault):
        await retry.call(fault)
    assert fault.attempts == [1]
    provider = Flaky(unavailable())  # the default rule's error is not the store's
    with pytest.raises(RetryableProviderError):
        await retry.call(provider)
