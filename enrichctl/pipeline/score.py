"""How many bars a series should hold: the asset class's calendar, counted, not materialised.

The quality score is completeness x consistency: completeness is the stored bars over the bars
this counts across the series' span (NYSE sessions and half-days for stock, etf and index; 24/7
for crypto; Sunday 17:00 to Friday 17:00 New York for forex), consistency falls with each issue.
"""

from __future__ import annotations

from collections.abc import Callable
import numpy as np

from enrichctl.domain import AssetClass, Series
from enrichctl.calendar import SessionCalendar, forex_weeks, ny_midnight_ms

def expected_bars(series: Series, calendar: SessionCalendar, first: int, last: int) -> int:
    """Bars a complete ``series`` has with starts in [first, last]."""
    tf = series.timeframe
    if last < first:
        return 0
    if not tf.is_intraday:
        expected = calendar.expected_bar_starts(series, first, last)
        return 0 if expected is None else len(expected)
    if series.asset_class.trades_on_exchange_calendar:
        # Bars starting inside the regular session (a half-day has fewer). The bar holding the
        # opening half hour (09:00 for hourly bars) and extended hours are extra, not expected.
        sessions = calendar.sessions(ny_midnight_ms(first), last)
        lo = np.maximum(sessions.open, first)
        hi = np.minimum(sessions.close - 1, last)
        counts = hi // tf.ms - (-(-lo // tf.ms)) + 1
        return int(np.clip(counts, 0, None).sum())
    if series.asset_class is AssetClass.FOREX:
        return sum(_grid_points(a, b, tf.ms) for a, b in forex_weeks(first, last))
    return _grid_points(first, last, tf.ms)


def expected_counter(series: Series, calendar: SessionCalendar) -> Callable[[int, int], int]:
    return lambda first, last: expected_bars(series, calendar, first, last)


def _grid_points(first: int, last: int, step: int) -> int:
    return max(0, last // step - (-(-first // step)) + 1)

