"""A fake ``Clock`` for tests: time moves only when tasks sleep on it or a test advances it.

With ``auto_advance`` (the default) the clock behaves like a virtual-time event loop: once the
tasks that can run have settled, it jumps to the earliest sleeper's deadline and wakes it, so a
test of a minute-long rate window runs in milliseconds, and sleepers wake in deadline order (ties
in the order they slept), which makes concurrent tests deterministic. With ``auto_advance=False``
time moves only through ``await clock.advance(seconds)``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

# How many loop turns count as "settled": a woken task typically sets a future that wakes
# another within one or two turns; this leaves a wide margin and still costs microseconds.
SETTLE_TURNS = 20


class FakeClock:
    def __init__(
        self, *, monotonic: float = 1000.0, wall: float = 1_700_000_000.0, auto_advance: bool = True
    ) -> None:
        self._now = monotonic
        self._wall_offset = wall - monotonic
        self._auto_advance = auto_advance
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self.sleeps: list[float] = []  # every duration asked of sleep(), in order

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def set_wall(self, epoch_seconds: float) -> None:
        """Move only the wall clock (as NTP or a person would); monotonic time is untouched."""
        self._wall_offset = epoch_seconds - self._now

    @property
    def sleeping(self) -> int:
        """How many tasks are asleep on this clock."""
        return sum(1 for *_, fut in self._sleepers if not fut.done())

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), woken))
        if self._auto_advance and (self._driver is None or self._driver.done()):
            self._driver = asyncio.ensure_future(self._drive())
        await woken  # cancelling the sleeper cancels this future; the driver skips it

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers deadline by deadline on the way."""
        target = self._now + seconds
        await _settle()
        while self._next_deadline() <= target:
            self._wake_next()
            await _settle()
        self._now = max(self._now, target)
        await _settle()

    async def _drive(self) -> None:
        while True:
            await _settle()
            if self._next_deadline() == float("inf"):
                return
            self._wake_next()

    def _next_deadline(self) -> float:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else float("inf")

    def _wake_next(self) -> None:
        """Jump to the earliest deadline and wake every sleeper due then."""
        self._now = max(self._now, self._sleepers[0][0])
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, woken = heapq.heappop(self._sleepers)
            if not woken.done():
                woken.set_result(None)


async def _settle() -> None:
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)
