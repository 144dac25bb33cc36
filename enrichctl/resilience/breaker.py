"""Circuit breaker: stops calling a provider that keeps failing, then lets trial calls probe it.

States: CLOSED (calls pass; outcomes go into a sliding window of the last ``window_size`` calls;
once the window holds ``minimum_calls`` and the failure rate is >= ``failure_threshold``, it
opens), OPEN (calls are rejected with ``CircuitOpen`` without being made, for ``recovery_timeout``
seconds of monotonic time), HALF_OPEN (exactly ``half_open_calls`` trial calls are admitted; all
succeed -> CLOSED, any fails -> OPEN again). Every transition starts a new generation; an outcome
reported with a permit from an older generation changes nothing.

Until the provider has answered once (any HTTP status), ``unreachable_after`` transport failures
in a row (refused, unresolvable, timed out) open it without waiting for ``minimum_calls``: five
timeouts of a provider that is not there cost five timeouts, one after the other when a single
request is in flight, where two already say it. Concurrent requests that time out together count
together, so the first wave of a run opens it. Once anything was answered the failure rate alone
decides, so a slow provider that works is judged as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

from enrichctl.errors import ConfigError, RetryableProviderError, TemporaryError
from enrichctl.resilience.clock import Clock

T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(TemporaryError):
    """The breaker rejected a call without making it; ``retry_in`` says when it will admit one."""

    def __init__(
        self, name: str, retry_in: float, *, trials_in_flight: bool = False,
        cause: str | None = None,
    ) -> None:
        if trials_in_flight:
            message = (
                f"circuit {name!r} is half-open and its trial calls are in flight; retry shortly"
            )
        else:
            message = f"circuit {name!r} is open; retry in {retry_in:.1f} s"
        if cause:
            message += f" (last error: {cause})"
        super().__init__(message)
        self.name = name
        self.retry_in = retry_in
        self.cause = cause


def counts_as_failure(exc: BaseException) -> bool:
    """True when ``exc`` says the provider is unhealthy (5xx, timeout, connection, bad body).

    A 429 is the quota speaking, not ill health: the limiter's pause handles it, and counting it
    would shut the provider off for the recovery timeout. A permanent 4xx, a refused key, our own
    bug or a cancellation says nothing about the provider either.
    """
    if isinstance(exc, RetryableProviderError) and exc.status == 429:
        return False
    return isinstance(exc, RetryableProviderError | TimeoutError | ConnectionError)


def is_transport_failure(exc: BaseException) -> bool:
    """True when no HTTP answer came back at all: refused, unresolvable, reset, timed out."""
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    return isinstance(exc, RetryableProviderError) and exc.status is None


class BreakerPermit:
    """Admission to make one call; report its outcome exactly once (later reports are no-ops)."""

    __slots__ = ("generation", "settled", "trial")

    def __init__(self, generation: int, trial: bool) -> None:
        self.generation = generation
        self.trial = trial
        self.settled = False


class CircuitBreaker:
    """A failure-rate breaker on an injected clock; ``call`` wraps one async call."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        *,
        failure_threshold: float = 0.5,
        window_size: int = 20,
        minimum_calls: int = 5,
        recovery_timeout: float = 30.0,
        half_open_calls: int = 1,
        unreachable_after: int = 2,
    ) -> None:
        if not 0 < failure_threshold <= 1:
            raise ValueError("failure_threshold must be in (0, 1]")
        if min(window_size, minimum_calls, half_open_calls, unreachable_after) < 1:
            raise ValueError(
                "window_size, minimum_calls, half_open_calls and unreachable_after must be at least 1"
            )
        if recovery_timeout <= 0:
            raise ValueError("recovery_timeout must be positive")
        self.name = name
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.window_size = window_size
        # A window smaller than minimum_calls could never trip; the window bounds it.
        self.minimum_calls = min(minimum_calls, window_size)
        self.recovery_timeout = recovery_timeout
        self.half_open_calls = half_open_calls
        self.unreachable_after = unreachable_after

        self._state = BreakerState.CLOSED
        self._generation = 0
        self._window: deque[bool] = deque(maxlen=window_size)  # True = failure
        self._failures = 0
        self._opened_at = 0.0
        self._trials_in_flight = 0
        self._trials_succeeded = 0
        self._times_opened = 0
        self._rejected = 0
        # Why the provider looks unhealthy, and whether it ever answered: a breaker that opened on
        # transport failures before any answer came back says the provider is unreachable.
        self._last_error: str | None = None
        self._last_transport = False
        self._answered = False
        self._unanswered_failures = 0  # transport failures in a row, while nothing was answered

    # -- the state machine -------------------------------------------------------------------

    def acquire(self) -> BreakerPermit:
        """Admit one call or raise ``CircuitOpen``; OPEN becomes HALF_OPEN here once it is due."""
        if self._state is BreakerState.OPEN:
            remaining = self._opened_at + self.recovery_timeout - self._clock.monotonic()
            if remaining > 0:
                self._rejected += 1
                raise CircuitOpen(self.name, remaining, cause=self._last_error)
            self._transition(BreakerState.HALF_OPEN)
        if self._state is BreakerState.HALF_OPEN:
            if self._trials_in_flight + self._trials_succeeded >= self.half_open_calls:
                self._rejected += 1
                raise CircuitOpen(self.name, 0.0, trials_in_flight=True, cause=self._last_error)
            self._trials_in_flight += 1
            return BreakerPermit(self._generation, trial=True)
        return BreakerPermit(self._generation, trial=False)

    def record_success(self, permit: BreakerPermit) -> None:
        if not self._settle(permit):
            return
        if permit.trial:
            self._trials_in_flight -= 1
            self._trials_succeeded += 1
            if self._trials_succeeded >= self.half_open_calls:
                self._transition(BreakerState.CLOSED)
        else:
            self._window_add(failed=False)

    def record_failure(self, permit: BreakerPermit, *, transport: bool = False) -> None:
        """``transport``: no HTTP answer came back at all (see ``is_transport_failure``)."""
        if not self._settle(permit):
            return
        if permit.trial:
            self._transition(BreakerState.OPEN)
            return
        self._window_add(failed=True)
        self._unanswered_failures = self._unanswered_failures + 1 if transport else 0
        never_answered = not self._answered and self._unanswered_failures >= self.unreachable_after
        if never_answered or (
            len(self._window) >= self.minimum_calls
            and self._failure_rate() >= self.failure_threshold
        ):
            self._transition(BreakerState.OPEN)

    def release(self, permit: BreakerPermit) -> None:
        """The call ended without saying anything about the provider: give a trial slot back."""
        if self._settle(permit) and permit.trial:
            self._trials_in_flight -= 1

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` if admitted; its outcome (see ``counts_as_failure``) feeds the breaker."""
        permit = self.acquire()
        try:
            result = await fn()
        except BaseException as exc:  # classified and re-raised, CancelledError included
            self._note(exc)
            if counts_as_failure(exc):
                self.record_failure(permit, transport=is_transport_failure(exc))
            else:
                self.release(permit)
            raise
        self._answered = True
        self.record_success(permit)
        return result

    def _note(self, exc: BaseException) -> None:
        """Remember the last failure's cause, and whether the provider has answered at all."""
        if is_transport_failure(exc):
            self._last_error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            self._last_transport = True
        elif getattr(exc, "status", None) is not None or isinstance(exc, ConfigError):
            # Any HTTP answer (a 5xx, a 429, a refused key) shows the provider is there.
            self._answered = True
            if counts_as_failure(exc):
                self._last_error = getattr(exc, "message", None) or str(exc)
                self._last_transport = False

    @property
    def unreachable_cause(self) -> str | None:
        """The cause when the breaker is open on transport failures and no call was ever answered:
        waiting for the recovery timeout would not help this run."""
        if self._state is BreakerState.OPEN and self._last_transport and not self._answered:
            return self._last_error
        return None

    def _settle(self, permit: BreakerPermit) -> bool:
        """Mark the permit used; False when already used or from an older generation."""
        if permit.settled:
            return False
        permit.settled = True
        return permit.generation == self._generation

    def _window_add(self, *, failed: bool) -> None:
        if len(self._window) == self.window_size:
            self._failures -= self._window[0]
        self._window.append(failed)
        self._failures += failed

    def _failure_rate(self) -> float:
        return self._failures / len(self._window) if self._window else 0.0

    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._trials_in_flight = 0
        self._trials_succeeded = 0
        if state is BreakerState.OPEN:
            self._opened_at = self._clock.monotonic()
            self._times_opened += 1
        elif state is BreakerState.CLOSED:
            self._window.clear()
            self._failures = 0

    # -- reading without changing -------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state the next call meets (an OPEN breaker past its timeout reads HALF_OPEN)."""
        if self._state is BreakerState.OPEN and self._retry_in() <= 0:
            return BreakerState.HALF_OPEN
        return self._state

    def _retry_in(self) -> float:
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.recovery_timeout - self._clock.monotonic())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view of the breaker; reading it changes nothing."""
        state = self.state
        due_trial = state is not self._state  # OPEN whose timeout passed: no trial admitted yet
        return {
            "state": state.value,
            "failure_rate": round(self._failure_rate(), 6),
            "calls_in_window": len(self._window),
            "failures_in_window": self._failures,
            "retry_in": round(self._retry_in(), 3),
            "trial_calls_in_flight": 0 if due_trial else self._trials_in_flight,
            "times_opened": self._times_opened,
            "rejected_calls": self._rejected,
            "failure_threshold": self.failure_threshold,
            "window_size": self.window_size,
            "minimum_calls": self.minimum_calls,
            "recovery_timeout": self.recovery_timeout,
            "half_open_calls": self.half_open_calls,
            "unreachable_after": self.unreachable_after,
        }
