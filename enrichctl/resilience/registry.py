"""The registry: every named breaker, limiter, retry policy and bulkhead of a run, on one clock.

One registry per run (created in ``service``, never module-level). ``get_status`` is the snapshot
the run stores so that ``status`` and ``serve`` in other processes can show it; it reads only.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

from enrichctl.resilience.breaker import CircuitBreaker
from enrichctl.resilience.bulkhead import Bulkhead
from enrichctl.resilience.clock import Clock, SystemClock
from enrichctl.resilience.ratelimit import RateLimiter
from enrichctl.resilience.retry import RetryPolicy

C = TypeVar("C")


class ResilienceRegistry:
    """Named resilience components; registering a name twice is a ValueError."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._retry_policies: dict[str, RetryPolicy] = {}
        self._bulkheads: dict[str, Bulkhead] = {}

    def register_circuit_breaker(
        self,
        name: str,
        failure_threshold: float = 0.5,
        recovery_timeout: float = 30.0,
        *,
        window_size: int = 20,
        minimum_calls: int = 5,
        half_open_calls: int = 1,
        unreachable_after: int = 2,
    ) -> CircuitBreaker:
        breaker = CircuitBreaker(
            name,
            self.clock,
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            window_size=window_size,
            minimum_calls=minimum_calls,
            half_open_calls=half_open_calls,
            unreachable_after=unreachable_after,
        )
        return _add(self._breakers, "circuit breaker", name, breaker)

    def register_rate_limiter(
        self,
        name: str,
        rate: int,
        interval: float = 60.0,
        burst: int | None = None,
        *,
        retry_after_cap: float = 300.0,
    ) -> RateLimiter:
        limiter = RateLimiter(
            name,
            self.clock,
            rate=rate,
            interval=interval,
            burst=burst,
            retry_after_cap=retry_after_cap,
        )
        return _add(self._limiters, "rate limiter", name, limiter)

    def add_rate_limiter(self, name: str, limiter: Any) -> Any:
        """Register a limiter built elsewhere (e.g. one whose window lives in a database); it
        must offer ``acquire()``, ``accepted()``, ``refused()``, ``pause(seconds)`` and ``snapshot()``
        like ``RateLimiter``."""
        return _add(self._limiters, "rate limiter", name, limiter)

    def register_retry_policy(
        self,
        name: str,
        max_retries: int = 4,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
        backoff_multiplier: float = 2.0,
        *,
        retry_after_cap: float = 300.0,
        rng: random.Random | None = None,
    ) -> RetryPolicy:
        policy = RetryPolicy(
            name,
            self.clock,
            max_retries=max_retries,
            initial_delay=initial_delay,
            max_delay=max_delay,
            backoff_multiplier=backoff_multiplier,
            retry_after_cap=retry_after_cap,
            rng=rng,
        )
        return _add(self._retry_policies, "retry policy", name, policy)

    def register_bulkhead(self, name: str, max_concurrent: int, timeout: float) -> Bulkhead:
        bulkhead = Bulkhead(name, self.clock, max_concurrent=max_concurrent, timeout=timeout)
        return _add(self._bulkheads, "bulkhead", name, bulkhead)

    def circuit_breaker(self, name: str) -> CircuitBreaker | None:
        return self._breakers.get(name)

    def rate_limiter(self, name: str) -> RateLimiter | None:
        return self._limiters.get(name)

    def retry_policy(self, name: str) -> RetryPolicy | None:
        return self._retry_policies.get(name)

    def bulkhead(self, name: str) -> Bulkhead | None:
        return self._bulkheads.get(name)

    def get_status(self) -> dict[str, Any]:
        """Every component's state as a JSON-able dict; reading it changes nothing."""
        return {
            "at": round(self.clock.wall(), 3),
            "circuit_breakers": {n: b.snapshot() for n, b in self._breakers.items()},
            "rate_limiters": {n: lim.snapshot() for n, lim in self._limiters.items()},
            "retry_policies": {n: p.snapshot() for n, p in self._retry_policies.items()},
            "bulkheads": {n: b.snapshot() for n, b in self._bulkheads.items()},
        }


def _add(components: dict[str, C], kind: str, name: str, component: C) -> C:
    if name in components:
        raise ValueError(f"a {kind} named {name!r} is already registered")
    components[name] = component
    return component
