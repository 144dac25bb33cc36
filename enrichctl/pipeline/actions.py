"""Corporate actions on every path: ask the provider once a run what happened since the last
check, store it, and turn every stored series a split re-adjusted into a full refetch.

A split whose execution date lies after a series' first bar and after the series was last
fetched whole changes every stored price before it; the planner's choice (grouped daily, an
incremental overlap, nothing due at all) does not matter, the series is refetched in this run.
The overlap re-read in ``task.py`` stays the second line of defence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import cast

from enrichctl.calendar import NEW_YORK
from enrichctl.domain import MS_PER_DAY, AssetClass, Series, Timeframe
from enrichctl.errors import ProviderAuthError, ProviderError, ProviderUnavailable, TemporaryError
from enrichctl.logs import get_logger, log_event
from enrichctl.pipeline.plan import JobPlan, Mode, RunPlan, SeriesPlan
from enrichctl.providers.base import Provider
from enrichctl.providers.reference import CorporateAction, ReferenceSource
from enrichctl.store.repo import Store

log = get_logger("actions")

DIVIDEND_EVERY_MS = 7 * MS_PER_DAY  # dividends do not change adjusted bars: a weekly look will do


def _key(provider: str, kind: str) -> str:
    return f"reference:{provider}:{kind}"


def _ny_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, NEW_YORK).strftime("%Y-%m-%d")


async def actions_refresh(store: Store, provider: Provider, symbols: set[str], now: int) -> int:
    """Fetch splits (every run) and dividends (weekly) since the last check; returns the number
    of reference requests made. A failure leaves the overlap check to notice re-adjustments.

    ``symbols`` are the configured ones (and this run's); the actions of those and of every
    stored series are kept: the next check starts from today, so an action dropped now because
    this run (``--symbols AAPL``) does not cover its symbol would be lost for good."""
    if not provider.supports_reference:
        return 0
    fetch = cast(ReferenceSource, provider).corporate_actions
    kept = symbols | {r.symbol for r in await store.series_list()}
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
        await store.actions_store(provider.name, [a for a in found if a.symbol in kept])
        # Re-ask from today on: an action announced late for today is seen next run.
        await store.control_put(_key(provider.name, kind), {"since": _ny_date(now), "at": now})
    return asked


async def _first_since(store: Store, now: int) -> str:
    """The first check looks back to the oldest complete fetch of any stored series."""
    fetched = [r.full_fetched_at for r in await store.series_list() if r.full_fetched_at is not None]
    return _ny_date(min(fetched) if fetched else now)


# Plans one stored series the run's timeframes left out, as a plain run would.
SeriesPlanner = Callable[[Series], Awaitable[SeriesPlan]]


async def actions_apply(
    store: Store, plan: RunPlan, provider: Provider, now: int, plan_series: SeriesPlanner | None = None
) -> RunPlan:
    """The plan with every series a stored split re-adjusted turned into a full refetch. With
    ``plan_series``, a split symbol's stored timeframes outside the plan (``--timeframes 1d``
    while 1h is stored too) are added as refetches: a split re-adjusts all of them at once."""
    splits: dict[str, list[CorporateAction]] = {}
    for action in await store.actions_list(provider=provider.name):
        if action.kind == "split":
            splits.setdefault(action.symbol, []).append(action)
    if not splits:
        return plan
    jobs = []
    for job in plan.jobs:
        found = splits.get(job.instrument.symbol)
        if not found:
            jobs.append(job)
            continue
        tasks = [await _refetch_if_split(store, task, found, provider, now) for task in job.tasks]
        if plan_series is not None:
            planned = {t.series.timeframe for t in job.tasks}
            for row in await store.series_list(job.instrument.symbol):
                if Timeframe(row.timeframe) in planned:
                    continue
                other = await plan_series(Series(row.symbol, AssetClass(row.asset_class), Timeframe(row.timeframe)))
                refetch = await _refetch_if_split(store, other, found, provider, now)
                if refetch is not other:  # only a split due for it brings it into this run
                    tasks.append(refetch)
        jobs.append(JobPlan(job.instrument, tuple(tasks)))
    return RunPlan(tuple(jobs), plan.grouped_days)


async def _refetch_if_split(
    store: Store, task: SeriesPlan, splits: list[CorporateAction], provider: Provider, now: int
) -> SeriesPlan:
    """``task``, or a whole refetch of its series when a split is due for it. A backfill's range
    (``--until``) becomes a whole refetch too: the bars outside the range are re-adjusted as
    well, and keeping them would mix two price scales in one series."""
    if task.mode is Mode.NEW or task.provider_change:
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
    end = task.history_end if task.history_end is not None else task.end
    return replace(task, mode=Mode.FULL, start=start, end=end, source="series",
                   requests=provider.requests_needed(task.series, start, end),
                   action=latest.describe())


def ny_midnight_of(day: str) -> int:
    """'2026-11-30' -> epoch ms of midnight New York, where a split's execution date starts."""
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=NEW_YORK).timestamp() * 1000)
