"""Which bars a series should have: exchange sessions for stocks, every day for crypto.

Wraps the maintained ``exchange-calendars`` package (NYSE, ``XNYS``) and turns its schedule into
epoch-millisecond arrays once, so the per-batch checks are plain numpy set operations.

Daily bars follow Polygon's convention: a day bar starts at midnight America/New_York of its
session (``day_start_ms``); weekly bars start at midnight New York of the week's Monday.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from enrichctl.domain import MS_PER_DAY, AssetClass, Series, Timeframe, session_bar_grid

NEW_YORK = ZoneInfo("America/New_York")
CALENDAR_START = "1990-01-01"
WEEK_MS = 7 * MS_PER_DAY


def day_start_ms(day: np.ndarray) -> np.ndarray:
    """Midnight America/New_York of each UTC-midnight day (epoch ms), as int64 epoch ms.

    Midnight always exists in New York (clocks change at 02:00), so localising is unambiguous."""
    import pandas as pd  # exchange-calendars depends on it; imported with the calendar

    local = pd.to_datetime(np.asarray(day, dtype=np.int64), unit="ms").tz_localize(NEW_YORK)
    return local.as_unit("ms").asi8.astype(np.int64)


def ny_midnight_ms(ms: int) -> int:
    """Midnight New York of the New York day that contains ``ms``."""
    local = datetime.fromtimestamp(ms / 1000, tz=NEW_YORK)
    return int(datetime(local.year, local.month, local.day, tzinfo=NEW_YORK).timestamp() * 1000)


def _epoch_ms(column) -> np.ndarray:
    """A tz-aware pandas column as int64 epoch ms."""
    return (column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ms]")
            .astype(np.int64))


@dataclass(frozen=True, slots=True)
class Sessions:
    """Sessions in a range: day start (NY midnight), open and close, all epoch ms, sorted."""

    day: np.ndarray
    open: np.ndarray
    close: np.ndarray


def _schedule_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(day start, open, close) of every NYSE session, from exchange-calendars."""
    import exchange_calendars  # heavy (pandas); imported only when no cached copy will do

    schedule = exchange_calendars.get_calendar("XNYS", start=CALENDAR_START).schedule
    utc_days = schedule.index.values.astype("datetime64[ms]").astype(np.int64)
    return day_start_ms(utc_days), _epoch_ms(schedule["open"]), _epoch_ms(schedule["close"])


# Building the schedule costs about half a second a process (exchange-calendars and pandas);
# the arrays are cached for a day, keyed by the library's version (new holidays come with it).
CACHE_MAX_AGE_S = 86_400


def _cache_file(cache_dir: Path | None) -> Path | None:
    from importlib.metadata import PackageNotFoundError, version

    if cache_dir is None:
        base = os.environ.get("CACHE_DIRECTORY") or os.environ.get("XDG_CACHE_HOME")
        cache_dir = Path(base.split(":")[0]) if base else Path.home() / ".cache"
        cache_dir = cache_dir / "enrichctl"
    try:
        library = version("exchange-calendars")
    except PackageNotFoundError:
        return None
    return cache_dir / f"xnys-{library}-{CALENDAR_START}.npz"


def _cache_load(cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    path = _cache_file(cache_dir)
    try:
        if path is None or time.time() - path.stat().st_mtime > CACHE_MAX_AGE_S:
            return None
        with np.load(path) as data:
            return data["day"], data["open"], data["close"]
    except (OSError, ValueError, KeyError):  # missing, unreadable or damaged: rebuild it
        return None


def _cache_store(cache_dir: Path | None, arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    path = _cache_file(cache_dir)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, day=arrays[0], open=arrays[1], close=arrays[2])
        partial.replace(path)  # atomic: a reader sees the old file or the new one
    except OSError:  # a read-only home (systemd sandbox): build it each time instead
        return


class SessionCalendar:
    """The NYSE calendar as epoch-ms arrays. Build one per process; it is immutable."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        arrays = _cache_load(cache_dir)
        if arrays is None:
            arrays = _schedule_arrays()
            _cache_store(cache_dir, arrays)
        self._day, self._open, self._close = arrays
        self.first_ms = int(self._day[0])
        self.last_ms = int(self._day[-1])

    def sessions(self, start_ms: int, end_ms: int) -> Sessions:
        """Sessions whose New York day starts in [start_ms, end_ms] (inclusive)."""
        lo = int(np.searchsorted(self._day, start_ms, side="left"))
        hi = int(np.searchsorted(self._day, end_ms, side="right"))
        return Sessions(self._day[lo:hi], self._open[lo:hi], self._close[lo:hi])

    def is_session_day(self, day_ms: np.ndarray) -> np.ndarray:
        """For NY-midnight day starts: which are NYSE sessions."""
        idx = np.searchsorted(self._day, day_ms)
        idx = np.clip(idx, 0, len(self._day) - 1)
        return self._day[idx] == day_ms

    def expected_bar_starts(self, series: Series, start_ms: int, end_ms: int) -> np.ndarray | None:
        """The bar starts a complete series must have in [start_ms, end_ms], or None when the
        timeframe has no fixed grid worth checking (intraday stocks trade outside the session
        too, so for them only whole missing sessions count; see ``expected_days``)."""
        tf = series.timeframe
        if tf is Timeframe.W1:
            return self.week_starts(series.asset_class, start_ms, end_ms)
        if tf is Timeframe.D1:
            if series.asset_class.trades_on_exchange_calendar:
                return self.sessions(start_ms, end_ms).day
            return calendar_days(start_ms, end_ms, weekdays_only=series.asset_class is AssetClass.FOREX)
        if tf.is_intraday and series.asset_class is AssetClass.CRYPTO:
            first = -(-start_ms // tf.ms) * tf.ms
            return np.arange(first, end_ms + 1, tf.ms, dtype=np.int64)
        if tf.is_intraday and series.asset_class is AssetClass.FOREX:
            grids = [np.arange(-(-a // tf.ms) * tf.ms, b + 1, tf.ms, dtype=np.int64)
                     for a, b in forex_weeks(start_ms, end_ms)]
            return np.concatenate(grids) if grids else np.empty(0, np.int64)
        return None

    def in_session(self, series: Series, ts: np.ndarray) -> np.ndarray:
        """Which bar starts are in-session bars (``session_bar_grid``) of an intraday exchange
        series; every bar of any other series is."""
        tf = series.timeframe
        if not (tf.is_intraday and series.asset_class.trades_on_exchange_calendar) or not len(ts):
            return np.ones(len(ts), bool)
        ts = np.asarray(ts, np.int64)
        i = np.searchsorted(self._day, ts, side="right") - 1
        known = i >= 0
        i = np.maximum(i, 0)
        first, count = session_bar_grid(self._open[i], self._close[i], tf.ms)
        return known & (ts >= first) & (ts < first + count * tf.ms) & (self._day[i] + MS_PER_DAY > ts)

    def expected_days(self, series: Series, start_ms: int, end_ms: int) -> np.ndarray | None:
        """For intraday series on the exchange calendar: the NY day starts of the sessions in
        the range, each of which should hold at least one bar."""
        if series.timeframe.is_intraday and series.asset_class.trades_on_exchange_calendar:
            return self.sessions(ny_midnight_ms(start_ms), end_ms).day
        return None

    def last_complete_bar_start(self, series: Series, now_ms: int) -> int | None:
        """The start of the newest bar that should be complete at ``now_ms``, or None."""
        tf = series.timeframe
        if tf is Timeframe.W1:
            # A week bar is complete once its week has ended (the demo provider's rule too).
            weeks = self.week_starts(series.asset_class, now_ms - 35 * MS_PER_DAY, now_ms)
            done = weeks[weeks + WEEK_MS <= now_ms]
            return int(done[-1]) if len(done) else None
        if series.asset_class.trades_on_exchange_calendar:
            if tf is Timeframe.D1:
                sessions = self.sessions(now_ms - 20 * MS_PER_DAY, now_ms - MS_PER_DAY)
                # A day bar is complete once its New York day has ended.
                done = sessions.day[sessions.day + MS_PER_DAY <= now_ms]
                return int(done[-1]) if len(done) else None
            sessions = self.sessions(now_ms - 20 * MS_PER_DAY, now_ms)
            done = sessions.close[sessions.open + tf.ms <= now_ms]
            if not len(done):
                return None
            last_close = min(int(done[-1]), now_ms)
            return (last_close - tf.ms) // tf.ms * tf.ms
        if tf is Timeframe.D1:
            days = calendar_days(
                now_ms - 10 * MS_PER_DAY, now_ms, weekdays_only=series.asset_class is AssetClass.FOREX
            )
            done = days[days + MS_PER_DAY <= now_ms]
            return int(done[-1]) if len(done) else None
        return (now_ms // tf.ms) * tf.ms - tf.ms

    def week_starts(self, asset_class: AssetClass, start_ms: int, end_ms: int) -> np.ndarray:
        """Monday midnight New York of every week in [start_ms, end_ms] that has a bar: on the
        exchange calendar a week with at least one session (a holiday week without any has
        none), otherwise every week (forex and crypto trade on weekdays)."""
        lo = start_ms - WEEK_MS
        if asset_class.trades_on_exchange_calendar:
            days = self.sessions(lo, end_ms).day
        else:
            days = calendar_days(lo, end_ms, weekdays_only=True)
        day_number = days // MS_PER_DAY  # NY midnight is 04:00/05:00 UTC of the same date
        weekday = (day_number + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        mondays = np.unique(day_start_ms((day_number - weekday) * MS_PER_DAY))
        return mondays[(mondays >= start_ms) & (mondays <= end_ms)]

    def previous_session_day(self, day_ms: int, n: int = 1) -> int:
        """The NY day start ``n`` sessions before ``day_ms`` (for windows measured in sessions)."""
        idx = int(np.searchsorted(self._day, day_ms, side="left"))
        return int(self._day[max(idx - n, 0)])


def calendar_days(start_ms: int, end_ms: int, *, weekdays_only: bool = False) -> np.ndarray:
    """Midnight New York of every (week)day whose day start lies in [start_ms, end_ms].

    Polygon starts the day bars of every asset class, crypto and forex included, at midnight
    New York."""
    first = (start_ms // MS_PER_DAY - 1) * MS_PER_DAY
    utc_days = np.arange(first, end_ms + MS_PER_DAY, MS_PER_DAY, dtype=np.int64)
    if weekdays_only:
        weekday = ((utc_days // MS_PER_DAY) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        utc_days = utc_days[weekday < 5]
    days = day_start_ms(utc_days)
    return days[(days >= start_ms) & (days <= end_ms)]


def forex_weeks(first: int, last: int) -> list[tuple[int, int]]:
    """The forex trading windows (Sunday 17:00 to Friday 17:00 New York) clipped to [first, last]."""
    start = datetime.fromtimestamp(first / 1000, NEW_YORK)
    sunday = (start - timedelta(days=(start.weekday() + 1) % 7)).replace(
        hour=17, minute=0, second=0, microsecond=0)
    if sunday > start:
        sunday -= _WEEK
    windows = []
    while int(sunday.timestamp() * 1000) <= last:
        opens = int(sunday.timestamp() * 1000)
        closes = int((sunday + timedelta(days=5)).timestamp() * 1000) - 1  # Friday 17:00, exclusive
        a, b = max(opens, first), min(closes, last)
        if a <= b:
            windows.append((a, b))
        sunday = (sunday + _WEEK).replace(hour=17)  # wall-clock 17:00 across DST changes
    return windows


_WEEK = timedelta(days=7)


def utc_date_ms(text: str) -> int:
    """'2024-01-31' -> epoch ms of UTC midnight. ValueError on a bad date."""
    d = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(d.timestamp() * 1000)


def days_ago_ms(now_ms: int, days: int) -> int:
    """UTC midnight ``days`` days before ``now_ms``'s day: history starts on a day boundary.
    Integer arithmetic: ``history_days = 99999999`` must not overflow a datetime."""
    return now_ms - now_ms % MS_PER_DAY - days * MS_PER_DAY
