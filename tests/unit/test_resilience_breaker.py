"""The circuit breaker: trips on a failure rate, rejects while open, probes with trial calls."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from fakeclock import FakeClock

from enrichctl.errors import (
    PermanentProviderError,
    ProviderAuthError,
    RetryableProviderError,
    TemporaryError,
)
from enrichctl.resilience.breaker import BreakerState, CircuitBreaker, CircuitOpen


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise RetryableProviderError("HTTP 503", status=503)


async def outcome(breaker: CircuitBreaker, succeed: bool) -> None:
    with contextlib.suppress(RetryableProviderError):
        await breaker.call(ok if succeed else fail)


def make(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
    params: dict[str, object] = dict(
        failure_threshold=0.5, window_size=10, minimum_calls=4, recovery_timeout=30.0
    )
    params.update(kwargs)
    return CircuitBreaker("polygon", clock, **params)


async def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.minimum_calls):
        await outcome(breaker, succeed=False)
    assert breaker.state is BreakerState.OPEN


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        (
            [False, False, False],
            BreakerState.CLOSED,
        ),  # 100 % failures, but fewer than minimum_calls
        ([True, False, True, True], BreakerState.CLOSED),  # 25 % < 50 %
        ([True, False, True, False], BreakerState.OPEN),  # exactly 50 %: the threshold is inclusive
    ],
)
async def test_trips_at_the_failure_rate_once_minimum_calls_are_seen(
    outcomes: list[bool], state: BreakerState
) -> None:
    breaker = make(FakeClock(auto_advance=False))
    for succeed in outcomes:
        await outcome(breaker, succeed)
    assert breaker.state is state


async def test_only_the_last_window_size_calls_count() -> None:
    breaker = make(FakeClock(auto_advance=False), window_size=4, failure_threshold=0.75)
    for succeed in [False, False, True, True, True, False, False]:
        await outcome(breaker, succeed)
    # The first two failures have slid out: the window is [S, S, F, F] = 50 %.
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["failure_rate"] == 0.5
    await outcome(breaker, succeed=False)  # [S, F, F, F] = 75 %
    assert breaker.state is BreakerState.OPEN


async def test_open_breaker_rejects_without_calling_and_says_when_to_retry() -> None:
    clock = FakeClock(auto_advance=False)
    breaker = make(clock)
    await trip(breaker)
    await clock.advance(17.7)
    called = []

    async def fn() -> None:
        called.append(True)

    with pytest.raises(CircuitOpen) as raised:
        await breaker.call(fn)
    assert called == []
    assert isinstance(raised.value, TemporaryError)
    assert raised.value.retry_in == pytest.approx(12.3)
    # The message names the failure that opened it, not only that it is open.
    assert str(raised.value) == "circuit 'polygon' is open; retry in 12.3 s (last error: HTTP 503)"


async def test_permanent_client_errors_do_not_count_as_failures() -> None:
    breaker = make(FakeClock(auto_advance=False))
    for exc in [PermanentProviderError("HTTP 404", status=404), ProviderAuthError("HTTP 401")] * 10:

        async def refused(exc: Exception = exc) -> None:
            raise exc

        with pytest.raises(type(exc)):
            await breaker.call(refused)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["calls_in_window"] == 0


async def test_timeouts_and_connection_errors_count_as_failures() -> None:
    breaker = make(FakeClock(auto_advance=False))
    await outcome(breaker, succeed=True)  # it answered once: the failure rate decides
    for exc_type in [TimeoutError, ConnectionResetError, TimeoutError]:

        async def broken(exc_type: type[Exception] = exc_type) -> None:
            raise exc_type()

        with pytest.raises(exc_type):
            await breaker.call(broken)
    assert breaker.state is BreakerState.OPEN


async def test_half_open_admits_exactly_the_trial_calls_when_100_arrive_at_once() -> None:
    clock = FakeClock(auto_advance=False)
    breaker = make(clock, half_open_calls=3)
    await trip(breaker)
    await clock.advance(30.0)
    release = asyncio.Event()
    started = []

    async def trial() -> str:
        started.append(True)
        await release.wait()
        return "ok"

    tasks = [asyncio.ensure_future(breaker.call(trial)) for _ in range(100)]
    await asyncio.sleep(0)
    assert len(started) == 3
    assert breaker.snapshot()["trial_calls_in_flight"] == 3
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 3
    assert sum(isinstance(r, CircuitOpen) for r in results) == 97
    assert breaker.state is BreakerState.CLOSED


async def test_one_failed_trial_reopens_for_a_full_recovery_timeout() -> None:
    clock = FakeClock(auto_advance=False)
    breaker = make(clock, half_open_calls=2)
    await trip(breaker)
    await clock.advance(30.0)
    await outcome(breaker, succeed=True)
    assert breaker.state is BreakerState.HALF_OPEN
    await outcome(breaker, succeed=False)
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["retry_in"] == 30.0
    assert breaker.snapshot()["times_opened"] == 2


@pytest.mark.parametrize("ending", ["cancelled", "ignored"])
async def test_a_trial_that_says_nothing_about_the_provider_returns_its_permit(ending: str) -> None:
    clock = FakeClock(auto_advance=False)
    breaker = make(clock, half_open_calls=1)
    await trip(breaker)
    await clock.advance(30.0)
    hold = asyncio.Event()

    async def first_trial() -> None:
        if ending == "ignored":
            raise PermanentProviderError("HTTP 404 unknown ticker", status=404)
        await hold.wait()

    task = asyncio.ensure_future(breaker.call(first_trial))
    await asyncio.sleep(0)
    if ending == "cancelled":
        with pytest.raises(CircuitOpen):  # the permit is taken while the trial runs
            await breaker.call(ok)
        task.cancel()
    with pytest.raises((asyncio.CancelledError, PermanentProviderError)):
        await task
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(ok) == "ok"  # the returned permit lets the next trial through
    assert breaker.state is BreakerState.CLOSED


async def test_late_failure_from_before_the_breaker_opened_changes_nothing() -> None:
    clock = FakeClock(auto_advance=False)
    breaker = make(clock, half_open_calls=1)
    go = asyncio.Event()

    async def slow_failure() -> None:
        await go.wait()
        raise RetryableProviderError("HTTP 502", status=502)

    old_call = asyncio.ensure_future(breaker.call(slow_failure))  # admitted while CLOSED
    await asyncio.sleep(0)
    await trip(breaker)
    await clock.advance(30.0)
    trial_go = asyncio.Event()

    async def trial() -> str:
        await trial_go.wait()
        return "ok"

    trial_call = asyncio.ensure_future(breaker.call(trial))
    await asyncio.sleep(0)
    go.set()
    with pytest.raises(RetryableProviderError):
        await old_call
    assert breaker.state is BreakerState.HALF_OPEN  # the stale failure did not reopen it
    trial_go.set()
    assert await trial_call == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_late_success_of_an_older_trial_does_not_count_toward_closing() -> None:
    clock = FakeClock(auto_advance=False)
    breaker = make(clock, half_open_calls=2)
    await trip(breaker)
    await clock.advance(30.0)
    go = asyncio.Event()

    async def slow_success() -> str:
        await go.wait()
        return "ok"

    old_trial = asyncio.ensure_future(breaker.call(slow_success))
    await asyncio.sleep(0)
    await outcome(breaker, succeed=False)  # the other trial fails: open again
    await clock.advance(30.0)
    new_go = asyncio.Event()

    async def new_success() -> str:
        await new_go.wait()
        return "ok"

    new_trial = asyncio.ensure_future(breaker.call(new_success))
    await asyncio.sleep(0)
    go.set()
    assert await old_trial == "ok"  # finishes during the next half-open period
    new_go.set()
    assert await new_trial == "ok"
    assert breaker.state is BreakerState.HALF_OPEN  # one fresh success of the two needed
    assert breaker.snapshot()["trial_calls_in_flight"] == 0
    await outcome(breaker, succeed=True)
    assert breaker.state is BreakerState.CLOSED


async def test_moving_the_wall_clock_changes_nothing() -> None:
    clock = FakeClock(auto_advance=False)
    breaker = make(clock)
    await trip(breaker)
    clock.set_wall(clock.wall() + 86_400)  # a day forward
    with pytest.raises(CircuitOpen) as raised:
        await breaker.call(ok)
    assert raised.value.retry_in == pytest.approx(30.0)
    clock.set_wall(clock.wall() - 2 * 86_400)  # and back
    assert breaker.state is BreakerState.OPEN
    await clock.advance(30.0)
    assert await breaker.call(ok) == "ok"


async def test_snapshot_shows_a_due_trial_without_admitting_it() -> None:
    clock = FakeClock(auto_advance=False)
    breaker = make(clock)
    await trip(breaker)
    await clock.advance(10.0)
    snap = breaker.snapshot()
    assert (snap["state"], snap["retry_in"], snap["failure_rate"]) == ("open", 20.0, 1.0)
    await clock.advance(20.0)
    for _ in range(3):
        assert breaker.snapshot()["state"] == "half_open"
    assert await breaker.call(ok) == "ok"  # reading did not use up the single trial permit
    assert breaker.snapshot()["state"] == "closed"


def test_a_429_is_the_quota_not_ill_health():
    # The limiter pauses on a 429; opening the circuit for it would shut the provider off.
    from enrichctl.errors import RetryableProviderError
    from enrichctl.resilience.breaker import counts_as_failure

    assert not counts_as_failure(RetryableProviderError("slow down", status=429))
    assert counts_as_failure(RetryableProviderError("bad gateway", status=502))
    assert counts_as_failure(TimeoutError())


async def refused() -> None:
    raise RetryableProviderError("cannot connect to 127.0.0.1:9 (connection refused)")


async def _refused_until_open(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        with contextlib.suppress(RetryableProviderError, CircuitOpen):
            await breaker.call(refused)


async def test_open_on_transport_failures_before_any_answer_names_the_cause() -> None:
    breaker = make(FakeClock())
    await _refused_until_open(breaker)
    assert breaker.unreachable_cause == "cannot connect to 127.0.0.1:9 (connection refused)"
    with pytest.raises(CircuitOpen) as caught:
        await breaker.call(ok)
    assert "connection refused" in caught.value.message


async def test_a_provider_that_answered_once_is_not_unreachable() -> None:
    breaker = make(FakeClock())
    await outcome(breaker, succeed=True)
    await _refused_until_open(breaker)
    assert breaker.state is BreakerState.OPEN and breaker.unreachable_cause is None


async def test_5xx_answers_open_the_breaker_but_do_not_make_it_unreachable() -> None:
    breaker = make(FakeClock())
    for _ in range(4):
        await outcome(breaker, succeed=False)
    assert breaker.state is BreakerState.OPEN and breaker.unreachable_cause is None
    with pytest.raises(CircuitOpen) as caught:
        await breaker.call(ok)
    assert "HTTP 503" in caught.value.message


async def silent() -> None:
    raise RetryableProviderError("no answer from 127.0.0.1:9 within 10 s")


async def test_two_transport_failures_before_any_answer_open_it() -> None:
    """One request at a time (a single job, the corporate-actions look-up): the second timeout
    says the provider is not there, not the fifth."""
    breaker = make(FakeClock(), minimum_calls=5)
    with pytest.raises(RetryableProviderError):
        await breaker.call(silent)
    assert breaker.state is BreakerState.CLOSED  # one may be a blip: the retry gets its chance
    with pytest.raises(RetryableProviderError):
        await breaker.call(silent)
    assert breaker.state is BreakerState.OPEN
    assert breaker.unreachable_cause == "no answer from 127.0.0.1:9 within 10 s"


async def test_a_wave_of_concurrent_timeouts_opens_it_at_once() -> None:
    """Four requests in flight time out together: they count together, so the wave opens it and
    no second wave is sent."""
    breaker = make(FakeClock(), minimum_calls=5)
    release = asyncio.Event()

    async def hanging() -> None:
        await release.wait()
        await silent()

    wave = [asyncio.ensure_future(breaker.call(hanging)) for _ in range(4)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*wave, return_exceptions=True)
    assert all(isinstance(r, RetryableProviderError) for r in results)
    assert breaker.state is BreakerState.OPEN and breaker.snapshot()["times_opened"] == 1
    with pytest.raises(CircuitOpen, match="no answer from 127.0.0.1:9"):
        await breaker.call(ok)


async def test_a_provider_that_answered_is_not_cut_off_by_two_timeouts() -> None:
    """A slow provider that works has answered: its timeouts go into the failure rate."""
    breaker = make(FakeClock(), minimum_calls=5, window_size=20)
    for _ in range(3):
        await outcome(breaker, succeed=True)
    for _ in range(2):
        with pytest.raises(RetryableProviderError):
            await breaker.call(silent)
    assert breaker.state is BreakerState.CLOSED


async def test_an_answer_in_between_starts_the_count_again() -> None:
    breaker = make(FakeClock(), minimum_calls=5, unreachable_after=3)
    for _ in range(2):
        with pytest.raises(RetryableProviderError):
            await breaker.call(silent)
    await outcome(breaker, succeed=False)  # a 503: the provider is there after all
    with pytest.raises(RetryableProviderError):
        await breaker.call(silent)
    assert breaker.state is BreakerState.CLOSED and breaker.unreachable_cause is None
