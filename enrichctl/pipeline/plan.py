"""What a run will do: which series, which ranges, how many provider requests.

The plan reads watermarks only; it changes nothing, which is what ``run --dry-run`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import cast

from enrichctl.calendar import SessionCalendar, days_ago_ms
from enrichctl.domain import EARLIEST_MS, VERIFY_ISSUE_KINDS, AssetClass, Instrument, Series, Timeframe, ms_to_iso
from enrichctl.errors import UsageError
from enrichctl.providers.base import GroupedDailySource, Provider
from enrichctl.settings import Settings
from enrichctl.store.repo import Store
from enrichctl.store.rows import SeriesRow


class Mode(StrEnum):
    NEW = "new"  # nothing stored yet: fetch the configured history
    INCREMENTAL = "incremental"  # from a few bars before the watermark to the last complete bar
    FULL = "full"  # refetch and replace the whole series
    UP_TO_DATE = "up_to_date"  # the last complete bar is stored: no request at all
    RANGE = "range"  # refetch [--since, --until] into a stored series; the rest stays as it is


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    series: Series
    mode: Mode
    start: int | None  # inclusive; None when up to date
    end: int  # inclusive: start of the newest bar that is complete now
    watermark: int | None
    history_start: int  # where a full refetch starts
    requests: int
    recompute_indicators: bool  # the configured indicator set changed since the last write
    source: str = "series"  # "grouped": served by the run's grouped-daily responses
    action: str | None = None  # a corporate action (or a provider change) forces a full refetch
    provider_change: bool = False  # the stored bars came from another provider: replace them all
    history_end: int | None = None  # where a full refetch ends: ``end`` before ``--until`` cut it

    def doc(self) -> dict:
        return {
            "series": str(self.series),
            "symbol": self.series.symbol,
            "timeframe": self.series.timeframe.value,
            "mode": self.mode.value,
            "from": ms_to_iso(self.start),
            "to": ms_to_iso(self.end) if self.start is not None else None,
            "watermark": ms_to_iso(self.watermark),
            "requests": self.requests,
            "source": self.source,
            "recompute_indicators": self.recompute_indicators,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class JobPlan:
    instrument: Instrument
    tasks: tuple[SeriesPlan, ...]


@dataclass(frozen=True, slots=True)
class RunPlan:
    jobs: tuple[JobPlan, ...]
    grouped_days: tuple[str, ...] = ()  # dates fetched once for the whole market (grouped daily)

    @property
    def requests(self) -> int:
        return sum(t.requests for j in self.jobs for t in j.tasks) + len(self.grouped_days)

    @property
    def grouped_series(self) -> frozenset[Series]:
        return frozenset(t.series for t in self.tasks if t.source == "grouped")

    @property
    def tasks(self) -> list[SeriesPlan]:
        return [t for j in self.jobs for t in j.tasks]

    def doc(self) -> dict:
        tasks = self.tasks
        return {
            "series": len(tasks),
            "to_fetch": sum(1 for t in tasks if t.mode is not Mode.UP_TO_DATE),
            "up_to_date": sum(1 for t in tasks if t.mode is Mode.UP_TO_DATE),
            "requests": self.requests,
            "grouped_days": list(self.grouped_days),
            "tasks": [t.doc() for t in tasks],
        }


def universe_select(
    settings: Settings, symbols: list[str] | None, asset_class: AssetClass | None
) -> list[Instrument]:
    """The instruments a run covers: ``--symbols`` (known or not) filtered by ``--asset-class``."""
    known = {e.symbol: e.asset_class for e in settings.universe}
    if symbols:
        chosen = [
            Instrument(s, known.get(s) or asset_class or AssetClass.for_symbol(s))
            for s in dict.fromkeys(symbols)
        ]
        if asset_class is not None:
            chosen = [i for i in chosen if i.asset_class is asset_class]
    else:
        chosen = [Instrument(e.symbol, e.asset_class) for e in settings.universe]  # type: ignore[arg-type]
        if asset_class is not None:
            chosen = [i for i in chosen if i.asset_class is asset_class]
    if not chosen:
        raise UsageError("nothing to do: no configured symbol matches the selection")
    return chosen


async def plan_build(
    store: Store,
    calendar: SessionCalendar,
    provider: Provider,
    settings: Settings,
    instruments: list[Instrument],
    timeframes: tuple[Timeframe, ...],
    *,
    now: int,
    since: int | None,
    full_refresh: bool,
    indicator_fingerprint: str,
    until: int | None = None,
) -> RunPlan:
    """``until`` (inclusive, epoch ms) ends every range there: a backfill of [since, until].

    Three reads whatever the number of series: the series rows, the series with verify issues,
    and the overlap starts of the series an incremental fetch extends."""
    mismatched = await store.series_with_issues(VERIFY_ISSUE_KINDS)
    rows = await store.series_rows(i.symbol for i in instruments)

    def plan_of(series: Series, overlap_start: int | None = None) -> SeriesPlan:
        return _series_plan(
            calendar, provider, settings, series, rows.get((series.symbol, series.timeframe.value)),
            now=now, since=since, full_refresh=full_refresh, fingerprint=indicator_fingerprint,
            until=until, mismatched=(series.symbol, series.timeframe.value) in mismatched,
            overlap_start=overlap_start,
        )

    planned = [
        [plan_of(Series(instrument.symbol, instrument.asset_class, tf)) for tf in timeframes]
        for instrument in instruments
    ]
    # The mode never depends on where the overlap starts: plan once, then plan the incremental
    # series again with their overlap starts, read for all of them at once.
    incremental = [t.series for tasks in planned for t in tasks if t.mode is Mode.INCREMENTAL]
    if incremental:
        starts = await store.series_overlap_starts(incremental, settings.overlap_bars)
        planned = [
            [plan_of(t.series, starts[t.series]) if t.mode is Mode.INCREMENTAL else t for t in tasks]
            for tasks in planned
        ]
    return RunPlan(tuple(JobPlan(i, tuple(tasks)) for i, tasks in zip(instruments, planned)))


async def series_plan(
    store: Store,
    calendar: SessionCalendar,
    provider: Provider,
    settings: Settings,
    series: Series,
    *,
    now: int,
    since: int | None,
    full_refresh: bool,
    fingerprint: str,
    until: int | None = None,
    mismatched: bool = False,
) -> SeriesPlan:
    """The plan of one series, read from the store (``plan_build`` plans many at once)."""
    row = await store.series_get(series)

    def plan_of(overlap_start: int | None = None) -> SeriesPlan:
        return _series_plan(calendar, provider, settings, series, row, now=now, since=since,
                            full_refresh=full_refresh, fingerprint=fingerprint, until=until,
                            mismatched=mismatched, overlap_start=overlap_start)

    plan = plan_of()
    if plan.mode is not Mode.INCREMENTAL:
        return plan
    starts = await store.series_overlap_starts([series], settings.overlap_bars)
    return plan_of(starts[series])


def _series_plan(
    calendar: SessionCalendar,
    provider: Provider,
    settings: Settings,
    series: Series,
    row: SeriesRow | None,
    *,
    now: int,
    since: int | None,
    full_refresh: bool,
    fingerprint: str,
    until: int | None = None,
    mismatched: bool = False,
    overlap_start: int | None = None,
) -> SeriesPlan:
    """The plan of one series from its stored ``row``. ``mismatched``: verify recorded stored
    values that differ (from the provider or from a recompute); a full refetch repairs the
    series and clears what verify recorded. A full refetch (another provider's bars, a repair)
    covers the whole series even in a backfill: it ends at the last complete bar, not at
    ``until``, so nothing stored is dropped. ``overlap_start``: the first of the last
    ``overlap_bars`` stored bars, where an incremental fetch starts (None: after the watermark)."""
    watermark = row.watermark if row else None
    wanted_start = since if since is not None else days_ago_ms(now, settings.history_days[series.timeframe])
    wanted_start = max(wanted_start, EARLIEST_MS)  # never a negative instant to the provider
    asked_before = row.requested_from if row is not None else None
    # A refetch never starts later than any earlier fetch did: stored history is never dropped.
    history_start = min(wanted_start, asked_before) if asked_before is not None else wanted_start
    end = calendar.last_complete_bar_start(series, now)
    if end is None:
        end = now - series.timeframe.ms
    history_end = end
    if until is not None:
        end = min(end, until)
    recompute = bool(row and row.bar_count and row.indicator_set != fingerprint)
    first = row.first_ts if row is not None else None
    action = None
    if row is not None and watermark is not None and row.provider != provider.name:
        # Synthetic and real bars never share a series: another provider replaces it whole.
        action = f"stored bars came from {row.provider}, this run fetches from {provider.name}"
        full_refresh = True
    repair = None
    if mismatched and action is None and watermark is not None and until is None:
        repair = "verify found stored values that differ"
        full_refresh = True

    if row is not None and row.delisted_at is not None and not full_refresh:
        mode, start = Mode.UP_TO_DATE, None  # a delisted ticker has no new bar to wait for
    elif watermark is None:
        if until is not None:  # a backfill asks exactly its range
            history_start = wanted_start
        mode, start = Mode.NEW, history_start
    elif action is not None:
        # Another provider's bars: replace the whole series, a backfill's range included.
        mode, start, end = Mode.FULL, history_start, history_end
    elif until is not None or (full_refresh and since is not None and first is not None and since > first):
        # An explicit range (a backfill, or a refresh from --since on): refetch exactly it and
        # keep the stored bars outside it.
        mode, start = Mode.RANGE, wanted_start
    elif full_refresh or (since is not None and asked_before is not None and since < asked_before):
        # --since earlier than anything asked before is a backfill: refetch from there.
        mode, start = Mode.FULL, history_start
    elif watermark >= end:
        mode, start = Mode.UP_TO_DATE, None
    else:
        mode = Mode.INCREMENTAL
        start = overlap_start if overlap_start is not None else watermark + 1
    if start is not None and start > end:
        mode, start = Mode.UP_TO_DATE, None
    requests = provider.requests_needed(series, start, end) if start is not None else 0
    return SeriesPlan(series, mode, start, end, watermark, history_start, requests, recompute,
                      action=(action or repair) if mode is Mode.FULL else None,
                      provider_change=action is not None and mode is Mode.FULL,
                      history_end=history_end)


GROUPED_CLASSES = (AssetClass.STOCK, AssetClass.ETF)


def grouped_choose(plan: RunPlan, calendar: SessionCalendar, provider: Provider, max_days: int) -> RunPlan:
    """Serve the daily stock series that miss at most ``max_days`` sessions from one grouped-daily
    request per date instead of one request per series, when that is cheaper. Each such series
    re-reads its watermark's session too (the overlap that reveals re-adjusted history)."""
    if not provider.supports_grouped_daily or max_days <= 0:
        return plan
    grouped_days = cast(GroupedDailySource, provider).grouped_days
    chosen: dict[Series, tuple[str, ...]] = {}
    for task in plan.tasks:
        series = task.series
        if (series.timeframe is not Timeframe.D1 or series.asset_class not in GROUPED_CLASSES
                or task.mode is not Mode.INCREMENTAL or task.watermark is None):
            continue
        missing = calendar.sessions(task.watermark + 1, task.end).day
        if 0 < len(missing) <= max_days:
            chosen[series] = tuple(grouped_days(task.watermark, task.end))
    days = sorted({d for ds in chosen.values() for d in ds})
    saved = sum(t.requests for t in plan.tasks if t.series in chosen)
    if not chosen or len(days) >= saved:
        return plan
    return RunPlan(
        tuple(grouped_apply(job, frozenset(chosen)) for job in plan.jobs), tuple(days)
    )


def grouped_apply(job: JobPlan, grouped: frozenset[Series]) -> JobPlan:
    """Mark the job's tasks whose series the run serves from grouped daily responses."""
    if not grouped:
        return job
    tasks = tuple(
        replace(t, source="grouped", start=t.watermark, requests=0)
        if t.series in grouped and t.mode is Mode.INCREMENTAL else t
        for t in job.tasks
    )
    return JobPlan(job.instrument, tasks)
