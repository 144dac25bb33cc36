"""Checks that look at a bar's neighbours: one-bar prints that revert, vwap outside the bar,
frozen prices, and holes inside an intraday session. ``quality.py`` runs them on every batch
(with the stored tail before it) and on a whole stored series (``verify``)."""

from __future__ import annotations

import numpy as np

from enrichctl.calendar import SessionCalendar, ny_midnight_ms
from enrichctl.domain import Bars, IssueKind, QualityIssue, Series, Severity, ms_to_iso, session_bar_grid

REVERT_MIN_MOVE = 0.08  # a print at least 8 % away from both neighbours ...
REVERT_BACK = 0.25  # ... whose next bar comes back within a quarter of the move
FROZEN_MIN_BARS = 5  # this many identical bars in a row, with volume, is a frozen feed
HOLE_MIN_BARS = 2  # a run this long missing inside a session is a hole (one is a quiet bar)
MAX_LISTED = 50


def neighbour_issues(series: Series, tail: Bars, bars: Bars, calendar: SessionCalendar) -> list[QualityIssue]:
    """Issues of ``bars`` (sorted, cleaned); ``tail`` is the stored context just before them."""
    joined = Bars.concat([tail, bars]) if len(tail) else bars
    own = len(joined) - len(bars)  # bars before this index belong to the context
    issues = _reverting_prints(joined, own) + _vwap_outside(bars) + _frozen(joined, own)
    if series.timeframe.is_intraday and series.asset_class.trades_on_exchange_calendar:
        issues += _session_holes(series, bars, calendar)
    return issues


def _capped(kind: IssueKind, severity: Severity, found: list[tuple[int, str]]) -> list[QualityIssue]:
    issues = [QualityIssue(kind, severity, text, ts) for ts, text in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        issues.append(QualityIssue(kind, severity, f"{len(found) - MAX_LISTED} more like these", None))
    return issues


def _reverting_prints(bars: Bars, own: int) -> list[QualityIssue]:
    c = bars.close
    if len(c) < 3:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        up = c[1:-1] / c[:-2] - 1  # the move into bar i
        back = c[2:] / c[:-2] - 1  # where the bar after it is, against the bar before
    flagged = (np.abs(up) >= REVERT_MIN_MOVE) & (np.abs(back) <= np.abs(up) * REVERT_BACK)
    index = np.flatnonzero(flagged) + 1
    index = index[index >= own]
    return _capped(IssueKind.BAD_PRINT, Severity.ERROR, [
        (int(bars.ts[i]), f"one-bar print at {ms_to_iso(int(bars.ts[i]))}: close {c[i]:g} is "
                          f"{up[i - 1] * 100:+.1f}% from {c[i - 1]:g} and the next bar reverts to {c[i + 1]:g}")
        for i in index.tolist()
    ])


def _vwap_outside(bars: Bars) -> list[QualityIssue]:
    tol = 1e-6 * np.abs(bars.close)
    with np.errstate(invalid="ignore"):
        bad = (bars.vwap < bars.low - tol) | (bars.vwap > bars.high + tol)
    return _capped(IssueKind.VWAP, Severity.WARNING, [
        (int(bars.ts[i]), f"vwap {bars.vwap[i]:g} at {ms_to_iso(int(bars.ts[i]))} is outside "
                          f"[low {bars.low[i]:g}, high {bars.high[i]:g}]")
        for i in np.flatnonzero(bad).tolist()
    ])


def _frozen(bars: Bars, own: int) -> list[QualityIssue]:
    if len(bars) < FROZEN_MIN_BARS:
        return []
    prices = np.stack([bars.open, bars.high, bars.low, bars.close])
    same = np.all(prices[:, 1:] == prices[:, :-1], axis=0) & np.all(prices[1:] == prices[:1], axis=0)[1:]
    with np.errstate(invalid="ignore"):
        same &= bars.volume[1:] > 0
    found = []
    run_start = None
    for i, flag in enumerate(np.append(same, False).tolist()):
        if flag and run_start is None:
            run_start = i
        elif not flag and run_start is not None:
            length = i - run_start + 1  # bars in the run, the first included
            if length >= FROZEN_MIN_BARS and i >= own:
                ts = int(bars.ts[run_start])
                found.append((ts, f"{length} identical bars from {ms_to_iso(ts)} at "
                                  f"{bars.close[run_start]:g} while volume trades"))
            run_start = None
    return _capped(IssueKind.FROZEN, Severity.WARNING, found)


def _session_holes(series: Series, bars: Bars, calendar: SessionCalendar) -> list[QualityIssue]:
    """Runs of regular-session bars missing inside sessions that have bars (whole missing
    sessions are the gap check's)."""
    if not len(bars):
        return []
    tf = series.timeframe.ms
    sessions = calendar.sessions(ny_midnight_ms(int(bars.ts[0])), int(bars.ts[-1]))
    present = np.unique(bars.ts)
    found = []
    for open_, close in zip(sessions.open.tolist(), sessions.close.tolist(), strict=True):
        start, count = session_bar_grid(open_, close, tf)
        grid = np.arange(start, start + int(count) * tf, tf, dtype=np.int64)
        grid = grid[(grid >= present[0]) & (grid <= present[-1])]
        if not len(grid):
            continue
        missing = ~np.isin(grid, present)
        if missing.all() or not missing.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], missing.astype(np.int8), [0]])))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            if b - a >= HOLE_MIN_BARS:
                found.append((int(grid[a]), f"{b - a} bars missing inside the session from "
                                            f"{ms_to_iso(int(grid[a]))} to {ms_to_iso(int(grid[b - 1]))}"))
    return _capped(IssueKind.INTRADAY_HOLE, Severity.WARNING, found)
