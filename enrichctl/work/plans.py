"""What each worker of a run plans with: the run's spec, a joining worker's plan of the run, the
plan of one claimed job, and the jobs a joining ``run`` adds to the active run.

Every worker plans from the watermarks as they are when it plans; the run row carries the options
(timeframes, since, until, full refresh, as-of) that make the plans of all workers agree.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, Instrument, RunStatus, Series, Timeframe, datetime_to_ms
from enrichctl.errors import RunActive
from enrichctl.logs import get_logger, log_event
from enrichctl.pipeline.actions import SeriesPlanner, actions_apply
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.pipeline.plan import JobPlan, RunPlan, SeriesPlan, grouped_apply, plan_build, series_plan
from enrichctl.pipeline.task import TaskContext
from enrichctl.providers.base import Provider
from enrichctl.resilience.clock import Clock
from enrichctl.settings import Settings
from enrichctl.store.repo import Store

log = get_logger("runs")

# What a run's jobs are fetched with: a run joined with other values would not do what was asked.
SPEC_KEYS = ("timeframes", "since", "until", "full_refresh", "as_of")
# A run joined the moment it was created has no jobs yet: look again this often, this many times.
JOBS_WAIT_S = 0.05
JOBS_WAIT_POLLS = 200


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What every worker of a run plans with (a joining worker reads it from the run row)."""

    timeframes: tuple[Timeframe, ...]
    since: int | None
    full_refresh: bool
    grouped: frozenset[Series]  # series this worker serves from grouped-daily responses
    planned: dict[str, JobPlan] = field(default_factory=dict)  # the run's own plan, used once
    until: int | None = None


async def job_plan(
    settings: Settings, ctx: TaskContext, spec: RunSpec, instrument: Instrument, attempts: int
) -> JobPlan:
    """Plan one claimed job from the watermarks as they are now. A job never attempted before
    takes the plan this worker made at the start: nobody has touched its series since."""
    planned = spec.planned.pop(instrument.symbol, None)
    if planned is not None and attempts == 0:
        return planned
    plan = await plan_build(
        ctx.store, ctx.calendar, ctx.provider, settings, [instrument], spec.timeframes,
        now=ctx.now, since=spec.since, full_refresh=spec.full_refresh,
        indicator_fingerprint=ctx.indicators.fingerprint, until=spec.until,
    )
    plan = await actions_apply(ctx.store, plan, ctx.provider, ctx.now,
                               whole_planner(settings, ctx.store, ctx.calendar, ctx.provider, ctx.indicators, ctx.now))
    return grouped_apply(plan.jobs[0], spec.grouped)


async def run_follow(
    settings: Settings, ctx: TaskContext, run_id: int
) -> tuple[RunPlan, TaskContext, RunSpec]:
    """A joining worker adopts the active run's spec (timeframes, since, as-of) and jobs."""
    run = await ctx.store.run_get(run_id)
    assert run is not None
    spec = json.loads(run.options)
    timeframes = tuple(Timeframe(t) for t in spec.get("timeframes") or [t.value for t in settings.timeframes])
    since = _iso_ms(spec.get("since"))
    as_of = _iso_ms(spec.get("as_of"))
    now = as_of if as_of is not None else ctx.now
    instruments = [Instrument(j.symbol, AssetClass(j.asset_class)) for j in await ctx.store.jobs_of_run(run_id)]
    until = _iso_ms(spec.get("until"))
    run_spec = RunSpec(timeframes, since, bool(spec.get("full_refresh")), frozenset(), until=until)
    plan = await plan_build(
        ctx.store, ctx.calendar, ctx.provider, settings, instruments, timeframes, now=now,
        since=since, full_refresh=run_spec.full_refresh,
        indicator_fingerprint=ctx.indicators.fingerprint, until=until,
    )
    plan = await actions_apply(ctx.store, plan, ctx.provider, now,
                               whole_planner(settings, ctx.store, ctx.calendar, ctx.provider, ctx.indicators, now))
    new_ctx = TaskContext(ctx.store, ctx.provider, ctx.calendar, ctx.indicators, ctx.quality, run_id, now)
    return plan, new_ctx, run_spec


async def selection_add(
    store: Store, run_id: int, plan: RunPlan, doc: dict[str, Any], clock: Clock
) -> bool:
    """Add this run's jobs that the active run lacks to it; False when it closed meanwhile.
    Raises ``RunActive`` (75) when the active run fetches with other options (timeframes, since,
    until, full refresh, as-of): its workers would not fetch what this run was asked."""
    run = await store.run_get(run_id)
    if run is None or run.status != RunStatus.RUNNING.value:
        return False
    active = json.loads(run.options or "{}")
    differ = [k for k in SPEC_KEYS if k in active and _spec_value(k, active[k]) != _spec_value(k, doc.get(k))]
    if differ:
        raise RunActive(
            f"run {run_id} is active with other {', '.join(differ)} "
            f"({', '.join(f'{k}={active[k]}' for k in differ)}); it cannot fetch this selection: "
            "try again when it has finished")
    have = {j.symbol for j in await store.jobs_of_run(run_id)}
    missing = [j.instrument for j in plan.jobs if j.instrument.symbol not in have]
    if not missing:
        return True
    added = await store.jobs_add(run_id, missing)
    for _ in range(JOBS_WAIT_POLLS):  # joined the moment the run was created: its jobs come next
        if added is not None:
            break
        await clock.sleep(JOBS_WAIT_S)
        added = await store.jobs_add(run_id, missing)
    if added is None:
        raise RunActive(f"run {run_id} is active but has not created its jobs; try again")
    if added:
        log_event(log, logging.INFO, "enrichment_jobs_added", run_id=run_id,
                  symbols=",".join(i.symbol for i in missing))
    return added


def _spec_value(key: str, value: Any) -> Any:
    return sorted(value) if key == "timeframes" and value is not None else value


def whole_planner(
    settings: Settings, store: Store, calendar: SessionCalendar, provider: Provider,
    indicators: IndicatorSet, now: int,
) -> SeriesPlanner:
    """Plans a stored series outside the run's timeframes as a plain run would (a split turns
    it into a whole refetch): no --since, no --until, no --full-refresh of its own."""

    def plan(series: Series) -> Awaitable[SeriesPlan]:
        return series_plan(store, calendar, provider, settings, series, now=now, since=None,
                           full_refresh=False, fingerprint=indicators.fingerprint)

    return plan


def _iso_ms(text: str | None) -> int | None:
    if text is None:
        return None
    return datetime_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
