"""How many bars a series should hold: the asset class's calendar, counted, not materialised.

The quality score is completeness x consistency: completeness is the stored bars over the bars
this counts across the series' span (NYSE sessions and half-days for stock, etf and index; 24/7
for crypto; Sunday 17:00 to Friday 17:00 New York for forex), consistency falls with each issue.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from enrichctl.calendar import SessionCalendar, forex_weeks, ny_midnight_ms
from enrichctl.domain import AssetClass, Series, session_bar_grid


def expected_bars(series: Series, calendar: SessionCalendar, first: int, last: int) -> int:
    """Bars a complete ``series`` has with starts in [first, last]."""
    tf = series.timeframe
    if last < first:
        return 0
    if not tf.is_intraday:
        expected = calendar.expected_bar_starts(series, first, last)
        return 0 if expected is None else len(expected)
    if series.asset_class.trades_on_exchange_calendar:
        # The in-session bars (the one holding the open included; a half-day has fewer), as
        # volatility annualises with them. Extended-hours bars are not expected, nor counted.
        sessions = calendar.sessions(ny_midnight_ms(first), last)
        start, count = session_bar_grid(sessions.open, sessions.close, tf.ms)
        lo = np.maximum(start, -(-first // tf.ms) * tf.ms)
        hi = np.minimum(start + (count - 1) * tf.ms, last)
        counts = (hi - lo) // tf.ms + 1
        return int(np.clip(counts, 0, None)[count > 0].sum())
    if series.asset_class is AssetClass.FOREX:
        return sum(_grid_points(a, b, tf.ms) for a, b in forex_weeks(first, last))
    return _grid_points(first, last, tf.ms)


def expected_counter(series: Series, calendar: SessionCalendar) -> Callable[[int, int], int]:
    return lambda first, last: expected_bars(series, calendar, first, last)


def session_counter(series: Series, calendar: SessionCalendar) -> Callable[[np.ndarray], np.ndarray] | None:
    """What completeness counts of the stored bars: the in-session ones of an intraday exchange
    series (None: every bar)."""
    if series.timeframe.is_intraday and series.asset_class.trades_on_exchange_calendar:
        return lambda ts: calendar.in_session(series, ts)
    return None


def _grid_points(first: int, last: int, step: int) -> int:
    return max(0, last // step - (-(-first // step)) + 1)

