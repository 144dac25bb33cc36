"""Corporate actions on every path: ask the provider once a run what happened since the last
check, store it, and turn every stored series a split re-adjusted into a full refetch.

A split whose execution date lies after a series' first bar and after the series was last
fetched whole changes every stored price before it; the planner's choice (grouped daily, an
incremental overlap, nothing due at all) does not matter, the series is refetched in this run.
The overlap re-read in ``task.py`` stays the second line of defence.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from enrichctl.calendar import NEW_YORK
from enrichctl.domain import MS_PER_DAY
from enrichctl.errors import ProviderAuthError, ProviderError, ProviderUnavailable, TemporaryError
from enrichctl.logs import get_logger, log_event
from enrichctl.pipeline.plan import JobPlan, Mode, RunPlan, SeriesPlan
from enrichctl.providers.base import Provider
from enrichctl.providers.reference import CorporateAction
from enrichctl.store.repo import Store

log = get_logger("actions")

DIVIDEND_EVERY_MS = 7 * MS_PER_DAY  # dividends do not change adjusted bars: a weekly look will do


def _key(provider: str, kind: str) -> str:
    return f"reference:{provider}:{kind}"


def _ny_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, NEW_YORK).strftime("%Y-%m-%d")


async def actions_refresh(store: Store, provider: Provider, symbols: set[str], now: int) -> int:
    """Fetch splits (every run) and dividends (weekly) since the last check; returns the number
    of reference requests made. A failure leaves the overlap check to notice re-adjustments."""
    fetch = getattr(provider, "corporate_actions", None)
    if fetch is None:
        return 0
    asked = 0
    for kind in ("split", "dividend"):
        last = await store.control_get(_key(provider.name, kind))
        if kind == "dividend" and last is not None and now - int(last["at"]) < DIVIDEND_EVERY_MS:
            continue
        since = last["since"] if last is not None else await _first_since(store, now)
        try:
            asked += 1
            found: list[CorporateAction] = await fetch(kind, since)
        except (ProviderError, TemporaryError, ProviderAuthError) as exc:
            # A refused key is reported by the bar requests, with the run recorded.
            log_event(log, logging.WARNING, "reference_failed", kind=kind, error=exc.message)
            if isinstance(exc, ProviderAuthError | ProviderUnavailable):
                break
            continue
        await store.actions_store(provider.name, [a for a in found if a.symbol in symbols])
        # Re-ask from today on: an action announced late for today is seen next run.
        await store.control_put(_key(provider.name, kind), {"since": _ny_date(now), "at": now})
    return asked


async def _first_since(store: Store, now: int) -> str:
    """The first check looks back to the oldest complete fetch of any stored series."""
    fetched = [r.full_fetched_at for r in await store.series_list() if r.full_fetched_at is not None]
    return _ny_date(min(fetched) if fetched else now)


async def actions_apply(store: Store, plan: RunPlan, provider: Provider, now: int) -> RunPlan:
    """The plan with every series a stored split re-adjusted turned into a full refetch."""
    splits: dict[str, list[CorporateAction]] = {}
    for action in await store.actions_list(provider=provider.name):
        if action.kind == "split":
            splits.setdefault(action.symbol, []).append(action)
    if not splits:
        return plan
    jobs = []
    for job in plan.jobs:
        tasks = []
        for task in job.tasks:
            found = splits.get(task.series.symbol)
            tasks.append(await _refetch_if_split(store, task, found, provider, now) if found else task)
        jobs.append(JobPlan(job.instrument, tuple(tasks)))
    return RunPlan(tuple(jobs), plan.grouped_days)


async def _refetch_if_split(
    store: Store, task: SeriesPlan, splits: list[CorporateAction], provider: Provider, now: int
) -> SeriesPlan:
    if task.mode in (Mode.NEW, Mode.RANGE) or task.provider_change:
        return task  # a new series or a provider change is fetched whole anyway
    row = await store.series_get(task.series)
    if row is None or row.first_ts is None:
        return task
    fetched_whole = row.full_fetched_at or 0
    due = [s for s in splits if row.first_ts < ny_midnight_of(s.ex_date) <= now
           and ny_midnight_of(s.ex_date) > fetched_whole]
    if not due:
        return task
    latest = max(due, key=lambda s: s.ex_date)
    start = task.history_start
    return replace(task, mode=Mode.FULL, start=start, source="series",
                   requests=provider.requests_needed(task.series, start, task.end),
                   action=latest.describe())


def ny_midnight_of(day: str) -> int:
    """'2026-11-30' -> epoch ms of midnight New York, where a split's execution date starts."""
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=NEW_YORK).timestamp() * 1000)
