"""The clock every resilience component reads, injected so tests move a fake one, never sleep."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Monotonic time for every interval and deadline, wall time only for what a person reads."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (deadlines, windows, timeouts)."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (HTTP-dates, timestamps shown to a person)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time; cancellable."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
