"""The clock ``work/`` waits on and stamps with: the resilience ``Clock``, injected, so that the
lease, the slots and the worker run on the fake clock in tests as the resilience layer does.

The database keeps wall time in milliseconds (``wall_ms``); intervals and deadlines use the
monotonic time, and every wait is the clock's ``sleep`` (``within`` bounds an awaitable by it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from enrichctl.resilience.clock import Clock, SystemClock

T = TypeVar("T")

SYSTEM_CLOCK: Clock = SystemClock()


def wall_ms(clock: Clock) -> int:
    """The clock's wall time as the database stores it (milliseconds since the epoch)."""
    return int(clock.wall() * 1000)


async def within(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T:
    """``asyncio.wait_for`` on ``clock``: the result, or ``TimeoutError`` once ``seconds`` of the
    clock's time have passed (the awaitable is cancelled then, and when this is cancelled)."""
    task = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        timer.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})  # let it unwind; its CancelledError stays in the task
        raise TimeoutError
    return task.result()
