"""Bulkhead: at most ``max_concurrent`` calls in flight; a caller waits first come, first served,
and gives up with ``BulkheadFull`` after ``timeout`` seconds of the injected clock.

A slot freed while others wait is handed straight to the first waiter, so a newcomer cannot jump
the line. Every path out (success, error, cancellation, timeout) gives the slot back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from enrichctl.errors import TemporaryError
from enrichctl.resilience.clock import Clock

T = TypeVar("T")


class BulkheadFull(TemporaryError):
    """No slot came free within the bulkhead's timeout."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"bulkhead {name!r} had no free slot within {timeout:g} s")
        self.name = name
        self.timeout = timeout


class Bulkhead:
    """A FIFO semaphore with a clock-driven wait timeout and a readable state."""

    def __init__(self, name: str, clock: Clock, *, max_concurrent: int, timeout: float) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.name = name
        self._clock = clock
        self.max_concurrent = max_concurrent
        self.timeout = timeout
        self._in_flight = 0
        # Waiters' futures, first come first. Invariant: the deque is non-empty only while every
        # slot is taken, so the fast path below never overtakes a waiter.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._peak = 0
        self._rejected = 0
        self._completed = 0

    async def acquire(self) -> None:
        """Take a slot, waiting at most ``timeout``; raises BulkheadFull when none came free."""
        if self._in_flight < self.max_concurrent and not self._waiters:
            self._take()
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        expiry = asyncio.ensure_future(self._expire(granted))
        try:
            await granted
        except BulkheadFull:
            self._rejected += 1
            raise
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self.release()  # handed a slot in the same tick we were cancelled: pass it on
            else:
                self._forget(granted)
            raise
        finally:
            expiry.cancel()

    def release(self) -> None:
        """Give a slot back: to the first waiter when there is one, else to the pool."""
        self._completed += 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter may not have removed itself yet
                # The slot moves to the waiter without passing through the pool: in_flight stays.
                waiter.set_result(None)
                return
        self._in_flight -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        async with self.slot():
            return await fn()

    def _take(self) -> None:
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)

    async def _expire(self, granted: asyncio.Future[None]) -> None:
        await self._clock.sleep(self.timeout)
        if not granted.done():
            self._forget(granted)
            granted.set_exception(BulkheadFull(self.name, self.timeout))

    def _forget(self, granted: asyncio.Future[None]) -> None:
        # Gone already when it was handed a slot or removed by the timeout.
        with contextlib.suppress(ValueError):
            self._waiters.remove(granted)

    # -- reading without changing -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view of the bulkhead; reading it changes nothing."""
        return {
            "max_concurrent": self.max_concurrent,
            "timeout": self.timeout,
            "in_flight": self._in_flight,
            "waiting": sum(1 for waiter in self._waiters if not waiter.done()),
            "peak_in_flight": self._peak,
            "rejected": self._rejected,
            "completed": self._completed,
        }
