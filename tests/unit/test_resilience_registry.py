"""The registry's read-only status, and the stack: retry -> breaker -> limiter -> bulkhead."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from fakeclock import FakeClock

from enrichctl.errors import PermanentProviderError, RetryableProviderError
from enrichctl.resilience.breaker import CircuitOpen
from enrichctl.resilience.registry import ResilienceRegistry
from enrichctl.resilience.stack import ResilientCaller
from enrichctl.settings import ResilienceSettings

MINUTE = 60.0


def stack(
    clock: FakeClock,
    *,
    rate: int = 5,
    burst: int | None = None,
    max_retries: int = 3,
    minimum_calls: int = 5,
    recovery_timeout: float = 30.0,
) -> tuple[ResilienceRegistry, ResilientCaller]:
    registry = ResilienceRegistry(clock)
    caller = ResilientCaller(
        "polygon",
        retry=registry.register_retry_policy(
            "polygon",
            max_retries=max_retries,
            initial_delay=0.5,
            max_delay=4.0,
            rng=random.Random(0),
        ),
        breaker=registry.register_circuit_breaker(
            "polygon",
            failure_threshold=0.5,
            recovery_timeout=recovery_timeout,
            window_size=10,
            minimum_calls=minimum_calls,
        ),
        limiter=registry.register_rate_limiter("polygon", rate=rate, interval=MINUTE, burst=burst),
        bulkhead=registry.register_bulkhead("polygon", max_concurrent=2, timeout=600.0),
    )
    return registry, caller


class Provider:
    """A fake provider: answers attempts from a script of statuses, recording when it was called."""

    def __init__(self, clock: FakeClock, script: list[int | tuple[int, float]]) -> None:
        self.clock = clock
        self.script = list(script)
        self.called_at: list[float] = []

    async def attempt(self) -> str:
        self.called_at.append(self.clock.monotonic())
        step = self.script.pop(0) if self.script else 200
        status, retry_after = step if isinstance(step, tuple) else (step, None)
        if status == 200:
            return "bars"
        if status in (429, 500, 502, 503):
            raise RetryableProviderError(f"HTTP {status}", status=status, retry_after=retry_after)
        raise PermanentProviderError(f"HTTP {status}", status=status)


def without_time(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "at"}


async def test_every_retry_passes_the_rate_limiter_again() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    _, caller = stack(clock, rate=1)
    provider = Provider(clock, [503, 503])
    assert await caller.call(provider.attempt) == "bars"
    # Backoff alone would retry within seconds; the limiter holds each attempt a full minute.
    assert [t - start for t in provider.called_at] == [0.0, 60.0, 120.0]


async def test_an_open_breaker_ends_the_retries_at_once() -> None:
    clock = FakeClock()
    _, caller = stack(clock, rate=0, max_retries=10, minimum_calls=3)
    provider = Provider(clock, [503] * 20)
    retried: list[int] = []
    with pytest.raises(CircuitOpen) as raised:
        await caller.call(
            provider.attempt, on_retry=lambda attempt, delay, exc: retried.append(attempt)
        )
    assert len(provider.called_at) == 3  # the third failure opened it; no fourth attempt was made
    assert retried == [1, 2, 3]
    assert raised.value.retry_in == pytest.approx(
        30.0 - (clock.monotonic() - provider.called_at[-1])
    )


async def test_a_429_pauses_the_shared_limiter_for_every_caller_before_the_retry() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    registry, caller = stack(clock, rate=100)
    throttled = Provider(clock, [(429, 30.0)])
    other = Provider(clock, [])

    async def other_caller() -> str:
        await clock.sleep(1.0)  # arrives after the 429
        return await caller.call(other.attempt)

    results = await asyncio.gather(caller.call(throttled.attempt), other_caller())
    assert list(results) == ["bars", "bars"]
    assert [t - start for t in throttled.called_at] == [0.0, 30.0]
    assert [t - start for t in other.called_at] == [30.0]
    assert registry.get_status()["rate_limiters"]["polygon"]["pauses"] == 1


async def test_a_permanent_error_is_not_retried_and_leaves_the_breaker_alone() -> None:
    clock = FakeClock()
    registry, caller = stack(clock)
    provider = Provider(clock, [404])
    with pytest.raises(PermanentProviderError):
        await caller.call(provider.attempt)
    assert len(provider.called_at) == 1
    assert registry.get_status()["circuit_breakers"]["polygon"]["calls_in_window"] == 0


async def test_from_settings_builds_the_stack_and_shares_it_by_name() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    registry = ResilienceRegistry(clock)
    settings = ResilienceSettings(retry_max_retries=1, bulkhead_max_concurrent=3, minimum_calls=7)
    first = ResilientCaller.from_settings("polygon", settings, 2, registry)
    second = ResilientCaller.from_settings("polygon", settings, 2, registry)
    unlimited = ResilientCaller.from_settings("demo", settings, 0, registry)
    assert first.limiter is second.limiter and first.breaker is second.breaker
    status = registry.get_status()
    assert status["rate_limiters"]["polygon"]["rate"] == 2
    assert status["rate_limiters"]["polygon"]["interval"] == 60.0
    assert status["rate_limiters"]["demo"]["unlimited"] is True
    assert status["bulkheads"]["polygon"]["max_concurrent"] == 3
    assert status["circuit_breakers"]["polygon"]["minimum_calls"] == 7
    assert status["retry_policies"]["polygon"]["max_retries"] == 1
    provider = Provider(clock, [])
    await asyncio.gather(*(c.call(provider.attempt) for c in (first, second, first)))
    assert [t - start for t in provider.called_at] == [0.0, 0.0, 60.0]  # one quota for both callers
    demo = Provider(clock, [])
    await asyncio.gather(*(unlimited.call(demo.attempt) for _ in range(50)))
    assert len(set(demo.called_at)) == 1


def test_registering_a_name_twice_is_refused() -> None:
    registry = ResilienceRegistry(FakeClock())
    registry.register_bulkhead("polygon", max_concurrent=1, timeout=1.0)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_bulkhead("polygon", max_concurrent=2, timeout=1.0)


async def test_status_is_json_and_shows_every_component() -> None:
    clock = FakeClock()
    registry, caller = stack(clock, rate=5, minimum_calls=2)
    provider = Provider(clock, [503, 503])
    with pytest.raises(CircuitOpen):
        await caller.call(provider.attempt)
    status = json.loads(json.dumps(registry.get_status()))
    breaker = status["circuit_breakers"]["polygon"]
    assert breaker["state"] == "open"
    assert (breaker["failure_rate"], breaker["calls_in_window"]) == (1.0, 2)
    assert 0 < breaker["retry_in"] <= 30.0
    limiter = status["rate_limiters"]["polygon"]
    assert (limiter["rate"], limiter["interval"], limiter["tokens"], limiter["waiting"]) == (
        5,
        60.0,
        3,
        0,
    )
    assert limiter["paused_until"] is None
    bulkhead = status["bulkheads"]["polygon"]
    assert (bulkhead["in_flight"], bulkhead["waiting"], bulkhead["max_concurrent"]) == (0, 0, 2)
    retry = status["retry_policies"]["polygon"]
    assert (retry["max_retries"], retry["retries"], retry["attempts"]) == (3, 2, 3)
    assert status["at"] == pytest.approx(clock.wall())


async def run_scenario(poll: bool) -> tuple[list[Any], dict[str, Any]]:
    """A busy minute-and-more of calls; with ``poll`` the status is read 1000 times throughout."""
    clock = FakeClock()
    start = clock.monotonic()
    registry, caller = stack(clock, rate=3, burst=2, minimum_calls=4, recovery_timeout=20.0)
    provider = Provider(clock, [503, 200, (429, 10.0), 503, 503, 200, 503, 503, 503, 503, 404] * 3)

    async def one(i: int) -> Any:
        await clock.sleep(i * 7.0)
        try:
            return (i, await caller.call(provider.attempt), clock.monotonic())
        except (RetryableProviderError, PermanentProviderError, CircuitOpen) as exc:
            return (i, type(exc).__name__, clock.monotonic())

    async def poller() -> None:
        for _ in range(1000):
            registry.get_status()
            await clock.sleep(0.1)

    tasks = [one(i) for i in range(12)] + ([poller()] if poll else [])
    results = await asyncio.gather(*tasks)
    await clock.sleep(start + 400.0 - clock.monotonic())  # compare the end state at one instant
    return [r for r in results if r is not None] + provider.called_at, without_time(
        registry.get_status()
    )


async def test_reading_status_a_thousand_times_during_operation_changes_nothing() -> None:
    quiet = await run_scenario(poll=False)
    polled = await run_scenario(poll=True)
    assert polled == quiet
    outcomes = {r[1] for r in quiet[0] if isinstance(r, tuple)}
    assert {"bars", "CircuitOpen"} <= outcomes  # the scenario really went through open and back
