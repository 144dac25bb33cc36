"""One task: bring one series up to date (fetch, verify the overlap, check, compute).

``series_update`` returns what to store as one ``SeriesWrite``; the runner commits it in one
transaction (``Store.series_commit``) with the task's own record: bars, indicator rows, quality
issues and the watermark move together or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import Bars, IssueKind, QualityIssue, Series, Severity, ms_to_iso
from enrichctl.errors import PermanentProviderError, UnknownTickerError
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.pipeline.plan import Mode, SeriesPlan
from enrichctl.pipeline.quality import CheckResult, check_batch, check_stale, quality_score
from enrichctl.pipeline.score import expected_counter, session_counter
from enrichctl.providers.base import Provider
from enrichctl.providers.reference import ReferenceSource, TickerState
from enrichctl.settings import QualitySettings
from enrichctl.store.repo import SeriesWrite, Store

# Two stored and fetched values closer than this are the same number (JSON round trips).
SAME_VALUE_RTOL = 1e-9
PRICE_FIELDS = ("open", "high", "low", "close")
# Stored bars the quality checks see before a batch (spike and volume baselines, gaps).
CONTEXT_BARS = 64


@dataclass(frozen=True, slots=True)
class TaskContext:
    store: Store
    provider: Provider
    calendar: SessionCalendar
    indicators: IndicatorSet
    quality: QualitySettings
    run_id: int | None
    now: int


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    bars_fetched: int
    bars_written: int
    indicator_values: int
    fetch_ms: float
    compute_ms: float | None
    issues: int
    readjusted: bool
    watermark: int | None
    action: str | None = None  # the corporate action that made this run refetch the series


async def series_update(ctx: TaskContext, plan: SeriesPlan) -> tuple[TaskOutcome, SeriesWrite | None]:
    """What bringing ``plan.series`` up to date fetched and computed, and what to store.

    The steps, in order: fetch (and verify the re-read overlap), check, compute the indicators,
    judge staleness, then build the one ``SeriesWrite`` the store commits."""
    if plan.mode is Mode.UP_TO_DATE:
        if plan.recompute_indicators:
            return await _recompute_only(ctx, plan.series, plan.watermark)
        return TaskOutcome(0, 0, 0, 0.0, None, 0, False, plan.watermark), None

    started = time.perf_counter()
    got = await _fetch(ctx, plan)
    if plan.mode is Mode.INCREMENTAL:
        await _overlap_verify(ctx, plan, got)
    fetch_ms = (time.perf_counter() - started) * 1000

    result = await _check(ctx, plan, got)

    compute_started = time.perf_counter()
    indicator_ts, values = await _compute(ctx, plan, got, result.bars)
    compute_ms = (time.perf_counter() - compute_started) * 1000
    indicator_values = int(sum(np.count_nonzero(~np.isnan(v)) for v in values.values()))

    watermark = await _staleness_judge(ctx, plan, got, result.bars)
    write = SeriesWrite(
        series=plan.series,
        provider=ctx.provider.name,
        synthetic=ctx.provider.synthetic,
        run_id=ctx.run_id,
        bars=result.bars,
        indicator_ts=indicator_ts,
        indicators=values,
        indicator_set=ctx.indicators.fingerprint,
        issues=got.issues,
        replace=got.replace,
        batch_score=quality_score(len(result.bars), result.issues),
        requested_from=plan.history_start if got.replace else None,
        expected=expected_counter(plan.series, ctx.calendar),
        in_session=session_counter(plan.series, ctx.calendar),
        delisted_at=got.delisted_at,
        full_fetched_at=ctx.now if got.replace else None,
    )
    outcome = TaskOutcome(got.count, len(result.bars), indicator_values, fetch_ms, compute_ms,
                          len(got.issues), got.readjusted or plan.action is not None, watermark,
                          plan.action)
    return outcome, write


@dataclass(slots=True)
class _Fetched:
    """One series' update between its steps: what was fetched and what that decided."""

    bars: Bars
    count: int  # bars fetched, a refetch included
    issues: list[QualityIssue] = field(default_factory=list)
    delisted_at: int | None = None
    known_empty: bool = False  # the provider knows the ticker but has no bar of it yet
    replace: bool = False  # the bars replace the stored series
    readjusted: bool = False  # the overlap showed re-adjusted history: refetched whole
    recompute: bool = False  # every indicator row is recomputed
    late: Bars = field(default_factory=Bars.empty)  # re-read bars that fill stored holes
    context: Bars = field(default_factory=Bars.empty)  # the stored tail (incremental only)


async def _fetch(ctx: TaskContext, plan: SeriesPlan) -> _Fetched:
    """The planned range from the provider; a new series that came back empty asks the
    reference data whether its ticker exists."""
    assert plan.start is not None
    fetched = await ctx.provider.fetch_bars(plan.series, plan.start, plan.end)
    got = _Fetched(fetched, len(fetched), replace=plan.mode in (Mode.NEW, Mode.FULL),
                   recompute=plan.recompute_indicators)
    if plan.mode is Mode.NEW and not len(fetched):
        got.delisted_at = await _ticker_check(ctx, plan.series, got.issues)
        got.known_empty = got.delisted_at is None
    if plan.action is not None:
        got.issues.append(QualityIssue(
            IssueKind.READJUSTED, Severity.WARNING,
            f"{plan.action}: refetched the whole series"
            + (" (prices split-adjusted)" if plan.action.startswith("split") else ""), None,
        ))
    return got


async def _overlap_verify(ctx: TaskContext, plan: SeriesPlan, got: _Fetched) -> None:
    """Compare the re-read overlap with the stored bars: late bars fill holes (indicators are
    recomputed), a changed bar means re-adjusted history and the whole series is refetched."""
    series, watermark = plan.series, plan.watermark
    assert watermark is not None and plan.start is not None
    # One read serves the overlap check, the quality checks' baselines and the indicators'
    # warm-up: the stored tail.
    wanted = max(ctx.indicators.warmup, CONTEXT_BARS)
    got.context = context = await ctx.store.bars_tail(series, wanted)
    if len(context) < wanted or int(context.ts[0]) <= plan.start:  # the tail holds the overlap
        stored = context.take((context.ts >= plan.start) & (context.ts <= watermark))
    else:
        stored = await ctx.store.bars_range(series, plan.start, watermark)
    # Grouped-daily volume may be counted differently from the series endpoint's: compare
    # prices only there (a split or dividend moves prices anyway).
    fields = PRICE_FIELDS if plan.source == "grouped" else PRICE_FIELDS + ("volume",)
    changed, got.late = _overlap_check(stored, got.bars, plan.start, watermark, fields)
    late = got.late
    if changed is None and len(late):
        # Bars the provider published after later ones were stored: fill the holes, and
        # since every later indicator value depends on them, recompute the whole series.
        got.recompute = True
        got.issues.append(QualityIssue(
            IssueKind.GAP, Severity.WARNING,
            f"{len(late)} bar(s) arrived late and were filled in, the first of "
            f"{ms_to_iso(int(late.ts[0]))}; indicators recomputed", int(late.ts[0]),
        ))
    if changed is not None:
        # A split or dividend re-adjusted the past: the stored history is wrong as a whole.
        got.readjusted = got.replace = True
        got.issues.append(
            QualityIssue(IssueKind.READJUSTED, Severity.WARNING, changed, _first_ts(got.bars))
        )
        # A grouped-daily answer holds one day: refetch the whole series on its own.
        source = getattr(ctx.provider, "inner", ctx.provider)
        got.bars = await source.fetch_bars(series, plan.history_start, plan.end)
        got.count += len(got.bars)


async def _check(ctx: TaskContext, plan: SeriesPlan, got: _Fetched) -> CheckResult:
    """The quality checks over the bars to store (their issues join ``got.issues``); a refetch
    that does not cover the stored series is refused."""
    series, watermark, fetched = plan.series, plan.watermark, got.bars
    assert plan.start is not None
    if got.replace or plan.mode is Mode.RANGE:
        result = check_batch(series, fetched, plan.history_start if got.readjusted else plan.start,
                             plan.end, ctx.calendar, ctx.quality, context=None)
    else:
        assert watermark is not None
        # Overlap bars were verified equal above; bars after the watermark (and late ones that
        # fill a hole) are new; bars before the asked start are strays the check records.
        late = got.late
        keep = (fetched.ts > watermark) | (fetched.ts < plan.start) | np.isin(fetched.ts, late.ts)
        result = check_batch(series, fetched.take(keep), watermark + 1 if not len(late) else plan.start,
                             plan.end, ctx.calendar, ctx.quality, context=got.context)
    got.issues.extend(result.issues)
    if got.replace and watermark is not None and not plan.provider_change:
        await _refetch_covers(ctx.store, series, result.bars, watermark)
    return result


async def _compute(
    ctx: TaskContext, plan: SeriesPlan, got: _Fetched, new_bars: Bars
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The indicator rows to store: of the whole series when it is replaced, recomputed or
    ranged, else of the new bars only (their warm-up from the stored tail)."""
    series = plan.series
    ranged = plan.mode is Mode.RANGE
    periods = series.timeframe.periods_per_year(series.asset_class)
    if got.replace or got.recompute or ranged:
        # New bars never share a timestamp with stored ones, except a range's, which replace
        # theirs; late ones sort into the middle.
        if got.replace:
            full = new_bars
        else:
            stored = await ctx.store.bars_range(series)
            if ranged:
                stored = stored.take(~np.isin(stored.ts, new_bars.ts))
            full = Bars.concat([stored, new_bars]).sorted()
        return full.ts, ctx.indicators.compute(full, periods)
    # The context holds at least ``warmup`` stored bars (or all there are).
    context = got.context
    tail = context.take(slice(max(len(context) - ctx.indicators.warmup, 0), None))
    joined = Bars.concat([tail, new_bars])
    return new_bars.ts, ctx.indicators.compute_tail(joined, len(tail), periods)


async def _staleness_judge(ctx: TaskContext, plan: SeriesPlan, got: _Fetched, new_bars: Bars) -> int | None:
    """The new watermark; a series still stale after it gets a staleness issue, unless its
    ticker is delisted (finished, not late) or known to have no bars yet."""
    watermark = plan.watermark
    new_watermark = max(int(new_bars.ts[-1]), watermark or 0) if len(new_bars) else watermark
    stale = check_stale(plan.series, new_watermark, ctx.now, ctx.calendar, ctx.quality)
    if stale is not None and plan.mode is Mode.INCREMENTAL and not len(new_bars):
        # Nothing new for a stale series: a delisted ticker is finished, not late.
        got.delisted_at = await _delisted_check(ctx, plan.series)
    if stale is not None and got.delisted_at is None and not got.known_empty:
        got.issues.append(stale)  # an empty known ticker has its warning already
    return new_watermark


async def _recompute_only(
    ctx: TaskContext, series: Series, watermark: int | None
) -> tuple[TaskOutcome, SeriesWrite]:
    """The indicator set changed but no bar is missing: recompute every indicator row."""
    started = time.perf_counter()
    bars = await ctx.store.bars_range(series)
    values = ctx.indicators.compute(bars, series.timeframe.periods_per_year(series.asset_class))
    compute_ms = (time.perf_counter() - started) * 1000
    write = SeriesWrite(
        series=series, provider=ctx.provider.name, synthetic=ctx.provider.synthetic,
        run_id=ctx.run_id, bars=Bars.empty(), indicator_ts=bars.ts, indicators=values,
        indicator_set=ctx.indicators.fingerprint,
    )
    indicator_values = int(sum(np.count_nonzero(~np.isnan(v)) for v in values.values()))
    return TaskOutcome(0, 0, indicator_values, 0.0, compute_ms, 0, False, watermark), write


def _overlap_check(
    stored: Bars, fetched: Bars, start: int, watermark: int, fields: tuple[str, ...],
) -> tuple[str | None, Bars]:
    """Compare re-read bars with the ``stored`` ones of [start, watermark]: a description of the
    first difference (the past was re-adjusted), and the re-read bars that were never stored
    (published late)."""
    again = fetched.take((fetched.ts >= start) & (fetched.ts <= watermark))
    if len(again) == 0:
        return None, Bars.empty()  # the provider sent nothing for the overlap: nothing to compare
    # The last duplicate wins, as in the quality check.
    _, last_index = np.unique(again.ts[::-1], return_index=True)
    again = again.take(len(again) - 1 - last_index)
    missing = np.setdiff1d(stored.ts, again.ts)
    if len(missing):
        return f"the provider no longer has the stored bar of {ms_to_iso(int(missing[0]))}", Bars.empty()
    common = np.isin(again.ts, stored.ts)
    late, again = again.take(~common), again.take(common)
    for name in fields:
        a, b = getattr(stored, name), getattr(again, name)
        same = np.isclose(a, b, rtol=SAME_VALUE_RTOL, atol=0.0, equal_nan=True)
        if not same.all():
            i = int(np.argmin(same))
            return (
                f"history re-adjusted: stored {name} {a[i]:g} of {ms_to_iso(int(stored.ts[i]))} "
                f"is now {b[i]:g}; refetched the whole series"
            ), Bars.empty()
    return None, late


async def _refetch_covers(store: Store, series: Series, bars: Bars, watermark: int) -> None:
    """A refetch replaces the stored series only when it covers it: the provider's history may
    be shorter than ours (plan limits) or come back empty; then keep what is stored."""
    row = await store.series_get(series)
    first = row.first_ts if row is not None else None
    if first is None:
        return
    if not len(bars) or int(bars.ts[0]) > first or int(bars.ts[-1]) < watermark:
        got = f"{ms_to_iso(int(bars.ts[0]))} to {ms_to_iso(int(bars.ts[-1]))}" if len(bars) else "no bars"
        raise PermanentProviderError(
            f"refetch returned {got} but bars are stored from {ms_to_iso(first)} to "
            f"{ms_to_iso(watermark)}: kept the stored series (the provider may keep less history than is stored)"
        )


# A ticker the reference data listed as active but without bars (a listing not trading yet) is
# asked about again only this long after: its bars are asked every run anyway.
KNOWN_TICKER_RECHECK_MS = 7 * 24 * 3_600_000


async def _ticker_check(ctx: TaskContext, series: Series, issues: list[QualityIssue]) -> int | None:
    """A new series' first fetch returned no bar: ask the reference data once. Unknown: fail
    (nothing is stored); delisted: keep it marked; known: a warning, and the answer is kept a
    week so that an empty series costs no lookup a night. Returns the delisting time."""
    state_of = _ticker_state_of(ctx.provider)
    key = f"reference:{ctx.provider.name}:ticker:{series.symbol}"
    known = await ctx.store.control_get(key) if state_of is not None else None
    if state_of is None or (known is not None and ctx.now - int(known["at"]) < KNOWN_TICKER_RECHECK_MS):
        state = TickerState.ACTIVE
    else:
        state = await state_of(series.symbol)
        if state is TickerState.ACTIVE:
            await ctx.store.control_put(key, {"state": state.value, "at": ctx.now})
    if state is TickerState.UNKNOWN:
        raise UnknownTickerError(f"unknown to {ctx.provider.name}: {series.symbol}")
    if state is TickerState.INACTIVE:
        issues.append(QualityIssue(IssueKind.GAP, Severity.WARNING,
                                   f"{series.symbol} is delisted: no bars in the range", None))
        return ctx.now
    issues.append(QualityIssue(IssueKind.GAP, Severity.WARNING,
                               f"{ctx.provider.name} has no bars of {series.symbol} in the range", None))
    return None


async def _delisted_check(ctx: TaskContext, series: Series) -> int | None:
    row = await ctx.store.series_get(series)
    if row is not None and row.delisted_at is not None:
        return row.delisted_at
    state_of = _ticker_state_of(ctx.provider)
    if state_of is None:
        return None
    return ctx.now if await state_of(series.symbol) is TickerState.INACTIVE else None


def _ticker_state_of(provider: Provider) -> Callable[[str], Awaitable[TickerState]] | None:
    """The provider's ticker lookup when it declares reference data (a run's ``GroupedCache``
    does not: its grouped series skip the lookups)."""
    return cast(ReferenceSource, provider).ticker_state if provider.supports_reference else None


def _first_ts(bars: Bars) -> int | None:
    return int(bars.ts.min()) if len(bars) else None
