"""The use cases both faces (CLI and ``serve``) share: run (in ``runs``), pause, resume, and
the dashboard documents.

Each opens what it needs (store, calendar, provider), does one thing, and closes them. Nothing
here imports typer, rich or aiohttp.web.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from enrichctl import dashboard, inventory, rundetail
from enrichctl.calendar import SessionCalendar
from enrichctl.dashboard import health, health_of_symbol  # noqa: F401  (the faces reach them through service)
from enrichctl.domain import ms_to_iso, now_ms
from enrichctl.logs import get_logger, log_event
from enrichctl.oncalendar import next_elapse
from enrichctl.runs import (  # noqa: F401  (the faces reach them through service)
    RunOptions,
    RunReport,
    exit_code_of,
    run,
    store_open,
)
from enrichctl.settings import Settings
from enrichctl.store.coordination import PAUSE_KEY
from enrichctl.store.repo import Store
from enrichctl.work.lease import holder_alive

if TYPE_CHECKING:
    from enrichctl.chartbars import BarsQuery

log = get_logger("service")

# --- control and documents: one Session serves a CLI command or a whole `serve` process -----


class Session:
    """An open store (and, lazily, the calendar) with the use cases that read or steer it.

    The CLI opens one per command; ``serve`` keeps one for its lifetime, so a request costs
    queries only."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._calendar: SessionCalendar | None = None

    @property
    def calendar(self) -> SessionCalendar:
        if self._calendar is None:
            self._calendar = SessionCalendar()
        return self._calendar

    async def overview(self, now: int | None = None) -> dict[str, Any]:
        now = now or now_ms()
        # systemd-analyze is a subprocess: run it in a thread, not inside the async build.
        next_run = await asyncio.to_thread(next_elapse, self.settings.schedule.on_calendar, now)
        return await dashboard.overview(self.store, self.settings, self.calendar, now, next_run=next_run)

    async def health(self) -> dict[str, Any]:
        return dashboard.health(await self.overview())

    async def job_status(self, symbol: str, now: int | None = None) -> dict[str, Any]:
        return await dashboard.job_status(self.store, self.settings, self.calendar, symbol, now or now_ms())

    async def series_inventory(self, now: int | None = None) -> dict[str, Any]:
        return await inventory.series_inventory(self.store, self.settings, self.calendar, now or now_ms())

    async def series_remove(self, symbol: str, timeframe: str | None, confirmed: bool) -> dict[str, Any]:
        doc = await inventory.series_remove(self.store, self.settings, symbol, timeframe, confirmed=confirmed)
        if doc["removed"]:
            log_event(log, logging.INFO, "series_removed", symbol=symbol, timeframes=",".join(doc["timeframes"]),
                      bars=doc["bars"])
        return doc

    async def history(self, limit: int, status: str | None = None) -> dict[str, Any]:
        if status is not None:
            return await rundetail.runs_with_status(self.store, status, limit)
        return await dashboard.history(self.store, limit)

    async def run_detail(self, run_id: int) -> dict[str, Any]:
        return await rundetail.run_detail(self.store, run_id)

    async def failed_of_last_run(self) -> dict[str, Any]:
        return await rundetail.failed_of_last_run(self.store)

    async def metrics(self, now: int | None = None) -> dict[str, Any]:
        return await dashboard.metrics(self.store, self.settings, now or now_ms())

    async def series_bars(self, query: BarsQuery) -> dict[str, Any]:
        from enrichctl import chartbars  # it reads through exports, which imports this module

        return await chartbars.bars_document(self.store, query)

    async def pause(self, reason: str | None, by: str | None = None) -> dict[str, Any]:
        """Pause, or while paused change the reason: a pause keeps its start (and, without a
        new reason, its reason), so "paused for 3 days" stays true when someone repeats it."""
        now = now_ms()
        earlier = await self.store.control_get(PAUSE_KEY)
        value = {"paused": True, "reason": reason, "by": by or _who(), "since": ms_to_iso(now),
                 "since_ms": now}
        if earlier is not None:
            value.update(since=earlier.get("since"), since_ms=earlier.get("since_ms"))
            if reason is None:
                value.update(reason=earlier.get("reason"), by=earlier.get("by") or value["by"])
        await self.store.control_put(PAUSE_KEY, value)
        log_event(log, logging.INFO, "enrichment_paused", reason=reason, by=value["by"])
        return value

    async def resume(self) -> dict[str, Any]:
        was = await self.store.control_get(PAUSE_KEY)
        await self.store.control_delete(PAUSE_KEY)
        log_event(log, logging.INFO, "enrichment_resumed", was_paused=was is not None)
        return {"paused": False, "was_paused": was is not None}

    async def active_run(self) -> dict[str, Any] | None:
        """The live holder of the run lease, or None (an expired lease is not live)."""
        lease = await self.store.lease_get()
        if lease is None or not holder_alive(lease, now_ms()):
            return None
        return {"run_id": lease.run_id, "host": lease.host, "pid": lease.pid,
                "heartbeat_at": ms_to_iso(lease.heartbeat_at)}


@asynccontextmanager
async def session_open(settings: Settings) -> AsyncIterator[Session]:
    async with store_open(settings) as store:
        yield Session(settings, store)


def _who() -> str:
    """user@host of whoever paused: $USER, else the account of this process (systemd services
    and containers often have no $USER and no login terminal), else uid N."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        import pwd

        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:  # a uid with no passwd entry (containers)
            user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


async def db_upgrade(settings: Settings) -> dict[str, Any]:
    """Opening the store applies the migrations; report where the schema stands."""
    from enrichctl.store import migrate

    async with store_open(settings) as store:
        async with store.engine.connect() as conn:
            current = await conn.run_sync(migrate.current_revision)
    return {"revision": current, "head": migrate.head_revision()}
