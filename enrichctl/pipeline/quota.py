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
from typing import Any

from enrichctl.errors import StoreError
from enrichctl.logs import get_logger, log_event
from enrichctl.resilience.clock import Clock
from enrichctl.resilience.ratelimit import RateLimiter
from enrichctl.store.repo import Store

log = get_logger("quota")
STORE_RETRY_S = 0.5


class SharedRateLimiter:
    """Drop-in for ``RateLimiter`` (``acquire``, ``pause``, ``snapshot``) whose window is global."""

    def __init__(self, local: RateLimiter, store: Store, name: str, rate: int, interval: float,
                 clock: Clock) -> None:
        self.local = local
        self.store = store
        self.name = name
        self.rate = rate
        self.interval_ms = int(interval * 1000)
        self.clock = clock
        self.admitted = 0
        self.waited_s = 0.0
        self._pending: set[asyncio.Task[None]] = set()

    async def acquire(self, tokens: int = 1) -> None:
        await self.local.acquire(tokens)
        if self.rate <= 0:
            return
        for _ in range(tokens):
            await self._admit_one()

    async def _admit_one(self) -> None:
        while True:
            try:
                wait_ms = await self.store.rate_try_admit(self.name, self.rate, self.interval_ms)
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
        if applied > 0:
            task = asyncio.get_running_loop().create_task(
                self.store.rate_pause(self.name, int(applied * 1000))
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return applied

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.local.snapshot(),
            "scope": "database",
            "shared_rate": self.rate,
            "shared_interval_s": self.interval_ms / 1000,
            "shared_admitted": self.admitted,
            "shared_waited_s": round(self.waited_s, 3),
        }
