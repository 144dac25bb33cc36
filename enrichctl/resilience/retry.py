"""Retry policy: up to ``max_retries`` more attempts after the first, full-jitter backoff.

The delays come from the ``backoff`` package's generators: ``backoff.expo`` gives the exponential
ceilings (``initial_delay * multiplier**n``, capped at ``max_delay``) and full jitter draws each
delay in [0, ceiling] (``backoff.full_jitter``, or the injected RNG). The loop itself is written
here rather than with ``backoff.on_exception``: backoff's async retry sleeps with
``asyncio.sleep``, which is not injectable, and has no hook to let a server's ``Retry-After``
lengthen one delay. Here the clock's sleep and the RNG are injected, so tests run on a fake clock
with a seeded RNG and never really sleep.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import backoff

from enrichctl.errors import ProviderError
from enrichctl.resilience.clock import Clock

T = TypeVar("T")

Jitter = Callable[[float], float]
"""Draws one delay from [0, ceiling], as ``backoff.full_jitter`` does."""

OnRetry = Callable[[int, float, BaseException], None]
"""Called before each backoff sleep with (number of the attempt that failed, delay s, its error)."""

_ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar("enrichctl_attempt", default=1)


def current_attempt() -> int:
    """The 1-based attempt number of the call in progress in this task (1 outside any retry)."""
    return _ATTEMPT.get()


def is_retryable(exc: BaseException) -> bool:
    """Only a provider error that says so (429, 5xx, timeout, connection, broken body) is retried.

    An open breaker, a permanent 4xx, a refused key and a cancellation are not.
    """
    return isinstance(exc, ProviderError) and exc.retryable


class RetryPolicy:
    """Runs an async attempt until it succeeds, fails for good, or the retries are used up."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        *,
        max_retries: int = 4,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
        backoff_multiplier: float = 2.0,
        retry_after_cap: float = 300.0,
        rng: random.Random | None = None,
        retryable: Callable[[BaseException], bool] = is_retryable,
    ) -> None:
        """``rng`` seeds the full jitter (tests); without it, ``backoff.full_jitter`` draws.
        ``retryable`` says which errors are tried again (by default a provider error that says so)."""
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if initial_delay < 0 or max_delay < 0 or retry_after_cap < 0:
            raise ValueError("delays must be >= 0")
        if backoff_multiplier < 1:
            raise ValueError("backoff_multiplier must be >= 1")
        self.name = name
        self._clock = clock
        self.max_retries = max_retries
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.backoff_multiplier = backoff_multiplier
        self.retry_after_cap = retry_after_cap
        self._retryable = retryable
        self._jitter: Jitter = (
            functools.partial(rng.uniform, 0.0) if rng is not None else backoff.full_jitter
        )
        self._calls = 0
        self._attempts = 0
        self._retries = 0
        self._exhausted = 0

    def ceilings(self) -> Iterator[float]:
        """The upper bounds of the jittered delays, retry after retry: ``backoff.expo``."""
        delays = backoff.expo(
            base=self.backoff_multiplier, factor=self.initial_delay, max_value=self.max_delay
        )
        next(delays)  # backoff's generators start with a bare yield, for its own .send(None)
        try:
            yield from delays
        except OverflowError:  # multiplier**n too big for a float before reaching the cap
            pass
        yield from itertools.repeat(self.max_delay if self.initial_delay > 0 else 0.0)

    def backoff_ceiling(self, retry_index: int) -> float:
        """Upper bound of the ``retry_index``-th (0-based) jittered delay, capped at max_delay."""
        return next(itertools.islice(self.ceilings(), retry_index, None))

    def delay_for(self, ceiling: float, error: BaseException) -> float:
        """Full jitter in [0, ceiling]; the error's ``retry_after`` (capped) wins when longer."""
        delay = self._jitter(ceiling)
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and math.isfinite(retry_after) and retry_after > 0:
            delay = max(delay, min(float(retry_after), self.retry_after_cap))
        return delay

    async def call(
        self, attempt_fn: Callable[[], Awaitable[T]], *, on_retry: OnRetry | None = None
    ) -> T:
        """Return the first successful attempt's result, or raise the error that ended the retries.

        At most ``max_retries + 1`` attempts; cancellation, also during a backoff sleep, ends it.
        """
        self._calls += 1
        ceilings = self.ceilings()
        attempt = 1
        while True:
            token = _ATTEMPT.set(attempt)
            self._attempts += 1
            try:
                return await attempt_fn()
            except Exception as exc:  # CancelledError is a BaseException and passes untouched
                if not self._retryable(exc):
                    raise
                if attempt > self.max_retries:
                    self._exhausted += 1
                    raise
                error: BaseException = exc
                delay = self.delay_for(next(ceilings), exc)
            finally:
                _ATTEMPT.reset(token)
            self._retries += 1
            if on_retry is not None:
                on_retry(attempt, delay, error)
            await self._clock.sleep(delay)
            attempt += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view of the policy and its counters; reading it changes nothing."""
        return {
            "max_retries": self.max_retries,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
            "backoff_multiplier": self.backoff_multiplier,
            "retry_after_cap": self.retry_after_cap,
            "calls": self._calls,
            "attempts": self._attempts,
            "retries": self._retries,
            "exhausted": self._exhausted,
        }
