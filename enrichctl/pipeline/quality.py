"""Quality checks: what may be stored from a fetched batch, and what is wrong with a series.

``check_batch`` runs on every fetched batch before it is stored: it drops what must not be stored
(bars outside the asked range, duplicates, unusable prices) and reports every issue it finds.
``check_stored`` re-checks a whole stored series (``enrichctl verify``); ``check_stale`` tells
whether a series has fallen behind; ``quality_score`` turns issues into one number.

Everything is vectorised over the bar columns; Python loops run only over the issues reported,
and at most ``MAX_ISSUES_PER_KIND`` of each kind are listed before one summary issue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from enrichctl.calendar import SessionCalendar, ny_midnight_ms
from enrichctl.domain import (
    BAR_FIELDS,
    MS_PER_DAY,
    AssetClass,
    Bars,
    IssueKind,
    QualityIssue,
    Series,
    Severity,
    Timeframe,
    ms_to_iso,
)
from enrichctl.pipeline.checks import neighbour_issues
from enrichctl.settings import QualitySettings

MAX_ISSUES_PER_KIND = 50
# 1.4826 * MAD estimates the standard deviation of normally distributed returns.
MAD_TO_SIGMA = 1.4826
# Adjusted prices are rounded by the provider: a low a hair above the open is not bad data.
PRICE_TOLERANCE = 1e-6
SEVERITY_WEIGHT = {Severity.ERROR: 1.0, Severity.WARNING: 0.25}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What may be stored (sorted, unique ts, inside the range, finite positive prices) and why."""

    bars: Bars
    issues: list[QualityIssue]


@dataclass(frozen=True, slots=True)
class _Found:
    """Findings of one rule: their timestamps, which are errors, and how to describe finding i."""

    ts: np.ndarray
    error: np.ndarray
    describe: Callable[[int], str]


_NOTHING = _Found(np.empty(0, np.int64), np.empty(0, bool), str)


def check_batch(
    series: Series,
    bars: Bars,
    start_ms: int,
    end_ms: int,
    calendar: SessionCalendar,
    config: QualitySettings,
    *,
    context: Bars | None = None,
) -> CheckResult:
    """Clean raw provider bars asked for [start_ms, end_ms] and report every issue found.

    ``context`` is the stored tail before the batch: the baseline for spikes and volume, and the
    left edge of the gap check. Bars it shares with the batch (a refetched overlap) are ignored.
    """
    in_range = (bars.ts >= start_ms) & (bars.ts <= end_ms)
    out = bars.take(~in_range)
    span = f"{ms_to_iso(start_ms)}..{ms_to_iso(end_ms)}"
    out_found = _Found(
        out.ts,
        np.zeros(len(out), bool),
        lambda i: f"bar at {ms_to_iso(int(out.ts[i]))} is outside the asked range {span}; dropped",
    )
    bars = bars.take(in_range)

    # Unusable prices go before de-duplication so that a valid copy of a bar wins over a broken one.
    unusable = _unusable_prices(bars)
    bad_found = _unusable_found(bars.take(unusable), "; dropped")
    bars, dup_found = _deduplicate(bars.take(~unusable).sorted())

    tail = _context_before(context, bars)
    issues = _emit(IssueKind.OUT_OF_RANGE, out_found)
    issues += _emit(IssueKind.DUPLICATE, dup_found)
    issues += _emit(IssueKind.OHLC, bad_found, _inconsistent(bars))
    issues += _emit(IssueKind.NON_SESSION, _non_session(series, bars, calendar))
    issues += _emit(IssueKind.PRICE_SPIKE, _spikes(tail, bars, config))
    issues += _emit(IssueKind.VOLUME_ANOMALY, *_volume_anomalies(series, tail, bars, config))
    issues += neighbour_issues(series, tail, bars, calendar)
    if len(bars):
        first = int(tail.ts[-1]) if len(tail) else int(bars.ts[0])
        present = np.concatenate([tail.ts[-1:], bars.ts])
        issues += _emit(IssueKind.GAP, _gaps(series, present, first, int(bars.ts[-1]), calendar))
    return CheckResult(bars, issues)


def check_stored(
    series: Series, bars: Bars, calendar: SessionCalendar, config: QualitySettings
) -> list[QualityIssue]:
    """Re-check a whole stored series: order, duplicates, prices, OHLC, sessions, spikes, gaps.

    Volume is not judged here: one median over decades of split-adjusted volume means little.
    """
    # The primary key and ORDER BY make disorder impossible; if it happens the store is broken.
    inversions = int(np.count_nonzero(np.diff(bars.ts) < 0))
    order = f"stored bars are not in timestamp order ({inversions} inversions)"
    issues = [QualityIssue(IssueKind.DUPLICATE, Severity.ERROR, order)] if inversions else []
    bars, dup_found = _deduplicate(bars.sorted())
    unusable = _unusable_prices(bars)
    bad_found = _unusable_found(bars.take(unusable), "")
    bars = bars.take(~unusable)
    issues += _emit(IssueKind.DUPLICATE, dup_found)
    issues += _emit(IssueKind.OHLC, bad_found, _inconsistent(bars))
    issues += _emit(IssueKind.NON_SESSION, _non_session(series, bars, calendar))
    issues += _emit(IssueKind.PRICE_SPIKE, _spikes(Bars.empty(), bars, config))
    issues += neighbour_issues(series, Bars.empty(), bars, calendar)
    if len(bars):
        issues += _emit(
            IssueKind.GAP, _gaps(series, bars.ts, int(bars.ts[0]), int(bars.ts[-1]), calendar)
        )
    return issues


def check_stale(
    series: Series,
    watermark: int | None,
    now_ms: int,
    calendar: SessionCalendar,
    config: QualitySettings,
) -> QualityIssue | None:
    """A STALE warning when at least ``stale_after_bars`` complete bars are missing after the
    watermark (or nothing is stored); None when fresh or the timeframe has no notion of it."""
    last = calendar.last_complete_bar_start(series, now_ms)
    if last is None:
        return None
    if watermark is None:
        return QualityIssue(IssueKind.STALE, Severity.WARNING, f"no bars stored for {series}")
    if watermark >= last:
        return None
    missing = _bars_between(series, watermark, last, calendar)
    if missing < config.stale_after_bars:
        return None
    return QualityIssue(
        IssueKind.STALE,
        Severity.WARNING,
        f"last bar {ms_to_iso(watermark)} is {missing} {_plural(missing, 'bar')} behind "
        f"the last complete bar {ms_to_iso(last)}",
        ts=watermark,
    )


def quality_score(bar_count: int, issues: Iterable[QualityIssue]) -> float:
    """1.0 for a clean series, falling to 0.0: ``max(0, 1 - weight / max(bar_count, 1))`` where an
    error weighs 1 and a warning 0.25, per issue (a gap run or a summary issue counts once)."""
    weight = sum(SEVERITY_WEIGHT[issue.severity] for issue in issues)
    return max(0.0, 1.0 - weight / max(bar_count, 1))


# --- rules -------------------------------------------------------------------------------------


def _unusable_prices(bars: Bars) -> np.ndarray:
    prices = np.stack([bars.open, bars.high, bars.low, bars.close])
    with np.errstate(invalid="ignore"):
        return ~np.all(np.isfinite(prices) & (prices > 0), axis=0)


def _unusable_found(bad: Bars, suffix: str) -> _Found:
    return _Found(
        bad.ts,
        np.ones(len(bad), bool),
        lambda i: (
            f"bar at {ms_to_iso(int(bad.ts[i]))} has a non-finite or non-positive price "
            f"({_ohlc_text(bad, i)}){suffix}"
        ),
    )


def _deduplicate(bars: Bars) -> tuple[Bars, _Found]:
    """Keep the last bar sent for each ts (``bars`` is stably sorted: last sent = last in run)."""
    same_as_next = bars.ts[1:] == bars.ts[:-1]
    if not same_as_next.any():
        return bars, _NOTHING
    keep = np.append(~same_as_next, True)
    columns = np.stack([getattr(bars, name) for name in BAR_FIELDS[1:]])
    left, right = columns[:, :-1], columns[:, 1:]
    differs_next = np.any((left != right) & ~(np.isnan(left) & np.isnan(right)), axis=0)
    differs_next &= same_as_next
    group = np.concatenate([[0], np.cumsum(~same_as_next)])  # run id of each bar
    dup_groups = np.unique(group[1:][same_as_next])
    sizes = np.bincount(group)[dup_groups]
    differs = np.zeros(group[-1] + 1, bool)
    differs[group[1:][differs_next]] = True
    ts = bars.ts[np.searchsorted(group, dup_groups)]
    error = differs[dup_groups]

    def describe(i: int) -> str:
        when = ms_to_iso(int(ts[i]))
        if error[i]:
            return f"{sizes[i]} different bars at {when}; kept the last one sent"
        return f"{sizes[i]} identical bars at {when}; kept one"

    return bars.take(keep), _Found(ts, error, describe)


def _inconsistent(bars: Bars) -> _Found:
    """Bars whose high/low do not contain open and close, or with negative volume (kept)."""
    tol = PRICE_TOLERANCE * bars.close
    with np.errstate(invalid="ignore"):
        low_above = bars.low > np.minimum(bars.open, bars.close) + tol
        high_below = bars.high < np.maximum(bars.open, bars.close) - tol
        low_over_high = bars.low > bars.high + tol
        negative_volume = bars.volume < 0
    index = np.flatnonzero(low_above | high_below | low_over_high | negative_volume)

    def describe(i: int) -> str:
        j = index[i]
        reasons = [
            text
            for flag, text in (
                (low_above[j], "low above min(open, close)"),
                (high_below[j], "high below max(open, close)"),
                (low_over_high[j], "low above high"),
                (negative_volume[j], f"negative volume {bars.volume[j]:g}"),
            )
            if flag
        ]
        return f"bar at {ms_to_iso(int(bars.ts[j]))}: {', '.join(reasons)} ({_ohlc_text(bars, j)})"

    return _Found(bars.ts[index], np.ones(len(index), bool), describe)


def _non_session(series: Series, bars: Bars, calendar: SessionCalendar) -> _Found:
    if series.timeframe is not Timeframe.D1 or not series.asset_class.trades_on_exchange_calendar:
        return _NOTHING
    ts = bars.ts[~calendar.is_session_day(bars.ts)]
    return _Found(
        ts,
        np.zeros(len(ts), bool),
        lambda i: f"daily bar at {ms_to_iso(int(ts[i]))} is not the start of an NYSE session",
    )


def _spikes(tail: Bars, bars: Bars, config: QualitySettings) -> _Found:
    """Close-to-close log returns far outside the robust spread of the batch and its context."""
    closes = np.concatenate([tail.close, bars.close])
    ts = np.concatenate([tail.ts, bars.ts])
    returns = np.diff(np.log(closes))
    if len(returns) == 0:
        return _NOTHING
    deviation = np.abs(returns - np.median(returns))
    sigma = MAD_TO_SIGMA * np.median(deviation)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(deviation > 0, deviation / sigma, 0.0)  # sigma 0: any move is infinitely odd
    flagged = (z > config.spike_threshold) & (np.abs(returns) >= config.spike_min_move)
    flagged[: max(len(tail) - 1, 0)] = False  # only returns that end on a new bar are this batch's
    index = np.flatnonzero(flagged)

    def describe(i: int) -> str:
        j = index[i]
        move = np.expm1(returns[j]) * 100
        return (
            f"close moved {move:+.1f}% from {ms_to_iso(int(ts[j]))} to {ms_to_iso(int(ts[j + 1]))} "
            f"(robust z-score {z[j]:.1f})"
        )

    return _Found(ts[index + 1], np.zeros(len(index), bool), describe)


def _volume_anomalies(
    series: Series, tail: Bars, bars: Bars, config: QualitySettings
) -> tuple[_Found, _Found]:
    """Volume far above the median of context and batch; zero volume on a session day bar."""
    known = np.concatenate([tail.volume, bars.volume])
    known = known[~np.isnan(known)]
    median = float(np.median(known)) if len(known) else 0.0
    # NaN volume (index bars) compares False, so it is skipped. A zero median (an illiquid
    # series) would make every traded bar an anomaly: no baseline, no check.
    none = np.empty(0, np.intp)
    high = np.flatnonzero(bars.volume > config.volume_factor * median) if median > 0 else none
    zero_volume_matters = (
        series.timeframe is Timeframe.D1
        and series.asset_class.trades_on_exchange_calendar
        and series.asset_class is not AssetClass.INDEX  # indices have no volume of their own
    )
    zero = np.flatnonzero(bars.volume == 0) if zero_volume_matters else none
    high_ts, zero_ts = bars.ts[high], bars.ts[zero]
    return (
        _Found(
            high_ts,
            np.zeros(len(high_ts), bool),
            lambda i: (
                f"volume {bars.volume[high[i]]:,.0f} at {ms_to_iso(int(high_ts[i]))} is "
                f"{bars.volume[high[i]] / median:.1f}x the median {median:,.0f}"
            ),
        ),
        _Found(
            zero_ts,
            np.zeros(len(zero_ts), bool),
            lambda i: f"zero volume on the session bar at {ms_to_iso(int(zero_ts[i]))}",
        ),
    )


def _gaps(
    series: Series, present: np.ndarray, first: int, last: int, calendar: SessionCalendar
) -> _Found:
    """Runs of expected bars missing strictly between ``first`` and ``last`` (both present)."""
    expected = calendar.expected_bar_starts(series, first, last)
    if expected is not None:
        found = _has_bar(expected, np.unique(present))
        unit = "bar" if series.timeframe.is_intraday else "day"
        if series.asset_class.trades_on_exchange_calendar:
            unit = "session"
        if series.timeframe is Timeframe.W1:
            unit = "week"
    else:
        expected = calendar.expected_days(series, first, last)
        if expected is None:  # weekly bars, forex intraday: no grid worth checking
            return _NOTHING
        # Sessions fall on weekdays, which are 24 h long in New York (DST changes on Sundays).
        day = np.searchsorted(expected, present, side="right") - 1
        inside = (day >= 0) & (present < expected[np.maximum(day, 0)] + MS_PER_DAY)
        found = np.zeros(len(expected), bool)
        found[day[inside]] = True
        unit = "session day"
    missing = np.flatnonzero(~found)
    if not len(missing):
        return _NOTHING
    breaks = np.flatnonzero(np.diff(missing) != 1) + 1
    starts = expected[missing[np.concatenate([[0], breaks])]]
    ends = expected[missing[np.concatenate([breaks - 1, [len(missing) - 1]])]]
    counts = np.diff(np.concatenate([[0], breaks, [len(missing)]]))
    as_text = _date_text if unit != "bar" else ms_to_iso

    def describe(i: int) -> str:
        n = int(counts[i])
        if n == 1:
            return f"1 {unit} missing: {as_text(int(starts[i]))}"
        return f"{n} {unit}s missing from {as_text(int(starts[i]))} to {as_text(int(ends[i]))}"

    return _Found(starts, np.zeros(len(starts), bool), describe)


def _has_bar(expected: np.ndarray, present_sorted: np.ndarray) -> np.ndarray:
    """For each expected bar start: is it among ``present_sorted``."""
    if not len(present_sorted):
        return np.zeros(len(expected), bool)
    at = np.minimum(np.searchsorted(present_sorted, expected), len(present_sorted) - 1)
    return present_sorted[at] == expected


def _bars_between(series: Series, watermark: int, last: int, calendar: SessionCalendar) -> int:
    """How many bars the calendar expects in (watermark, last]."""
    tf = series.timeframe
    if tf.is_intraday and series.asset_class.trades_on_exchange_calendar:
        # Regular-session grid points only: extended hours are optional for a stale check.
        sessions = calendar.sessions(ny_midnight_ms(watermark), last)
        lo = np.maximum(sessions.open // tf.ms * tf.ms, watermark + 1)
        hi = np.minimum(sessions.close - 1, last)
        counts = hi // tf.ms - (-(-lo // tf.ms)) + 1
        return int(np.clip(counts, 0, None).sum())
    if tf.is_intraday:  # a fixed grid; counted, not materialised (a year of 1m bars is 500k)
        return int(last // tf.ms - watermark // tf.ms)
    expected = calendar.expected_bar_starts(series, watermark + 1, last)
    return 0 if expected is None else len(expected)


# --- formatting --------------------------------------------------------------------------------


def _emit(kind: IssueKind, *groups: _Found) -> list[QualityIssue]:
    """Issues of one kind: the first ``MAX_ISSUES_PER_KIND`` listed, the rest in one summary."""
    issues: list[QualityIssue] = []
    rest_ts: list[np.ndarray] = []
    rest_error = False
    for group in groups:
        listed = min(len(group.ts), MAX_ISSUES_PER_KIND - len(issues))
        for i in range(listed):
            severity = Severity.ERROR if group.error[i] else Severity.WARNING
            issues.append(QualityIssue(kind, severity, group.describe(i), int(group.ts[i])))
        if listed < len(group.ts):
            rest_ts.append(group.ts[listed:])
            rest_error = rest_error or bool(np.any(group.error[listed:]))
    if rest_ts:
        ts = np.concatenate(rest_ts)
        issues.append(
            QualityIssue(
                kind,
                Severity.ERROR if rest_error else Severity.WARNING,
                f"{len(ts)} more {kind.value.replace('_', ' ')} issues not listed, "
                f"from {ms_to_iso(int(ts.min()))} to {ms_to_iso(int(ts.max()))}",
                int(ts.min()),
            )
        )
    return issues


def _context_before(context: Bars | None, bars: Bars) -> Bars:
    """The usable stored bars strictly before the batch (a refetch overlaps the stored tail)."""
    if context is None:
        return Bars.empty()
    if len(bars):
        context = context.take(slice(0, int(np.searchsorted(context.ts, bars.ts[0]))))
    return context.take(~_unusable_prices(context))


def _ohlc_text(bars: Bars, i: int) -> str:
    return f"o={bars.open[i]:g} h={bars.high[i]:g} l={bars.low[i]:g} c={bars.close[i]:g}"


def _date_text(ms: int) -> str:
    """The New York date of a day start: its UTC ISO date (NY midnight is 04:00/05:00 UTC)."""
    return (ms_to_iso(ms) or "")[:10]


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
