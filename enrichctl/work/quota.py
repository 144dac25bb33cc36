"""The provider's quota shared by every worker on one database.

Polygon counts requests per key, whatever host sends them: N workers together must never exceed
``rate`` requests in any rolling window. ``SharedRateLimiter`` keeps the admission log in the
database (``Store.rate_try_admit``: the database's clock, serialised check-then-insert) and keeps a
local ``RateLimiter`` in front of it for fair, FIFO waiting inside the process. A 429 seen by one
worker pauses all of them (the pause is stored too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from enrichctl.errors import StoreError
from enrichctl.logs import get_logger, log_event
from enrichctl.resilience.clock import Clock
from enrichctl.resilience.ratelimit import RateLimiter
from enrichctl.store.repo import Store

log = get_logger("quota")
STORE_RETRY_S = 0.5
# A request admitted at t reaches the provider a little later: the time between the admission and
# the send varies (a busy loop, a descheduled process), and two requests whose delays differ can
# land closer than the window. The shared window is kept this much longer than the provider's so
# that such jitter never turns into a 429: 2 % of the window, at least 0.25 s and at most 1 s.
SEND_JITTER_GUARD = (0.02, 0.25, 1.0)


def window_with_guard_ms(interval: float) -> int:
    share, low, high = SEND_JITTER_GUARD
    return int((interval + min(max(interval * share, low), high)) * 1000)


class SharedRateLimiter:
    """Drop-in for ``RateLimiter`` (``acquire``, ``accepted``, ``refused``, ``pause``,
    ``snapshot``) whose window is global."""

    def __init__(self, local: RateLimiter, store: Store, name: str, rate: int, interval: float,
                 clock: Clock) -> None:
        self.local = local
        self.store = store
        self.name = name
        self.rate = rate
        self.interval_ms = window_with_guard_ms(interval)
        self.clock = clock
        self.admitted = 0
        self.waited_s = 0.0
        self._pending: set[asyncio.Task[None]] = set()

    async def acquire(self, tokens: int = 1) -> float:
        admitted_at = await self.local.acquire(tokens)
        if self.rate <= 0:
            return admitted_at
        for _ in range(tokens):
            await self._admit_one()
        return admitted_at

    def accepted(self, admitted_at: float) -> None:
        self.local.accepted(admitted_at)

    def refused(self, admitted_at: float, retry_after: float | None) -> float:
        """As ``RateLimiter.refused``; the pause reaches every worker through the database."""
        applied = self.local.refused(admitted_at, retry_after)
        self._share_pause(applied)
        return applied

    async def _admit_one(self) -> None:
        while True:
            try:
                # The local limit, lowered by the provider's refusals, bounds every worker's sum.
                wait_ms = await self.store.rate_try_admit(self.name, self.local.limit, self.interval_ms)
            except StoreError as exc:  # a busy database: wait a little, never over-admit
                log_event(log, logging.WARNING, "quota_store_busy", limiter=self.name, error=exc.message)
                wait_ms = int(STORE_RETRY_S * 1000)
            if wait_ms == 0:
                self.admitted += 1
                return
            self.waited_s += wait_ms / 1000
            await self.clock.sleep(wait_ms / 1000)

    def pause(self, seconds: float | None) -> float:
        applied = self.local.pause(seconds)
        self._share_pause(applied)
        return applied

    def _share_pause(self, applied: float) -> None:
        if applied > 0:
            task = asyncio.get_running_loop().create_task(
                self.store.rate_pause(self.name, int(applied * 1000))
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.local.snapshot(),
            "scope": "database",
            "shared_rate": self.rate,
            "shared_interval_s": self.interval_ms / 1000,
            "shared_admitted": self.admitted,
            "shared_waited_s": round(self.waited_s, 3),
        }


QUOTA_NOTICE_S = 1.0  # shorter waits are pacing, not worth a word


class QuotaWaitClock:
    """The limiters' clock, telling ``report`` when they wait for the quota: the progress display
    says "waiting for the provider's quota (N s)" instead of sitting silent on one symbol."""

    def __init__(self, clock: Clock, report: Callable[[str, dict[str, Any]], None]) -> None:
        self._clock = clock
        self._report = report

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def wall(self) -> float:
        return self._clock.wall()

    async def sleep(self, seconds: float) -> None:
        if seconds < QUOTA_NOTICE_S:
            await self._clock.sleep(seconds)
            return
        self._report("quota_wait", {"seconds": seconds})
        try:
            await self._clock.sleep(seconds)
        finally:
            self._report("quota_wait_done", {})
