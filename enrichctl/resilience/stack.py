"""The stack one provider's calls go through: retry -> breaker -> bulkhead -> limiter -> fn.

Every attempt passes every layer, so a retry waits for the limiter like any other call; an open
breaker ends the retries at once (``CircuitOpen`` is not retryable); a 429 pauses the shared limiter
for every caller before the retry sleeps (without ``Retry-After``, it also lowers the limiter's
effective rate until refusals stop; successes raise it back slowly). A breaker open on transport failures before the provider
ever answered turns the call's error into ``ProviderUnavailable``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from enrichctl.errors import ProviderError, ProviderUnavailable, RetryableProviderError
from enrichctl.resilience.breaker import CircuitBreaker, CircuitOpen
from enrichctl.resilience.bulkhead import Bulkhead
from enrichctl.resilience.ratelimit import RateLimiter
from enrichctl.resilience.registry import ResilienceRegistry
from enrichctl.resilience.retry import OnRetry, RetryPolicy

if TYPE_CHECKING:
    from enrichctl.settings import ResilienceSettings

T = TypeVar("T")

RATE_INTERVAL_SECONDS = 60.0  # providers state their quota per minute


class ResilientCaller:
    """One provider's retry policy, breaker, limiter and bulkhead, applied to each attempt."""

    def __init__(
        self,
        name: str,
        *,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        limiter: RateLimiter,
        bulkhead: Bulkhead,
        on_retry: OnRetry | None = None,
    ) -> None:
        self.name = name
        self.retry = retry
        self.breaker = breaker
        self.limiter = limiter
        self.bulkhead = bulkhead
        self.on_retry = on_retry

    @classmethod
    def from_settings(
        cls,
        name: str,
        resilience: ResilienceSettings,
        requests_per_minute: int,
        registry: ResilienceRegistry,
        *,
        on_retry: OnRetry | None = None,
    ) -> ResilientCaller:
        """Build the four components on ``registry``, or reuse those registered under ``name``.

        The limiter allows ``requests_per_minute`` in any rolling minute (0 = unlimited), in bursts
        of up to the whole quota; reuse means every caller of one provider shares one limiter.
        """
        r = resilience
        breaker = registry.circuit_breaker(name) or registry.register_circuit_breaker(
            name,
            failure_threshold=r.failure_rate_threshold,
            recovery_timeout=r.recovery_timeout,
            window_size=r.window_size,
            minimum_calls=r.minimum_calls,
            half_open_calls=r.half_open_calls,
            unreachable_after=r.unreachable_after,
        )
        limiter = registry.rate_limiter(name) or registry.register_rate_limiter(
            name,
            rate=requests_per_minute,
            interval=RATE_INTERVAL_SECONDS,
            burst=None,
            retry_after_cap=r.retry_after_cap,
        )
        retry = registry.retry_policy(name) or registry.register_retry_policy(
            name,
            max_retries=r.retry_max_retries,
            initial_delay=r.retry_initial_delay,
            max_delay=r.retry_max_delay,
            backoff_multiplier=r.retry_backoff_multiplier,
            retry_after_cap=r.retry_after_cap,
        )
        bulkhead = registry.bulkhead(name) or registry.register_bulkhead(
            name, max_concurrent=r.bulkhead_max_concurrent, timeout=r.bulkhead_timeout
        )
        return cls(
            name,
            retry=retry,
            breaker=breaker,
            limiter=limiter,
            bulkhead=bulkhead,
            on_retry=on_retry,
        )

    async def call(self, fn: Callable[[], Awaitable[T]], *, on_retry: OnRetry | None = None) -> T:
        """Run ``fn`` (one HTTP attempt) through every layer, retrying as the policy allows.

        ``on_retry`` (default: the one given at construction) hears about each retry.
        """

        async def admitted() -> T:
            # The slot first, then the quota, right before sending: a request admitted by the
            # limiter and then kept waiting for a slot would reach the provider later than the
            # limiter counted it, possibly in the provider's next window.
            async with self.bulkhead.slot():
                admitted_at = await self.limiter.acquire()
                try:
                    result = await fn()
                except RetryableProviderError as exc:
                    if exc.status == 429:
                        # Every caller pauses; without Retry-After the limit comes down too.
                        self.limiter.refused(admitted_at, exc.retry_after)
                    raise
                self.limiter.accepted(admitted_at)
                return result

        async def attempt() -> T:
            return await self.breaker.call(admitted)

        try:
            return await self.retry.call(attempt, on_retry=on_retry or self.on_retry)
        except (ProviderError, CircuitOpen):
            # Open on transport failures before any answer: the provider is not there at all, and
            # the run is better ended now than after the recovery timeout (exit 75, try later).
            cause = self.breaker.unreachable_cause
            if cause is not None:
                raise ProviderUnavailable(f"provider unreachable: {cause}") from None
            raise
