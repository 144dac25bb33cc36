"""Staleness judged against the schedule.

A series is stale when it lacks bars that the last scheduled run should have fetched. The
reference instant is therefore the timer's last elapse (plus its randomised delay and the time a
run takes), not the wall clock: an intraday series fetched at 15:00 under a daily 01:30 timer is
fresh until tomorrow's run should have brought the afternoon's bars. Without a usable schedule
(``systemd-analyze`` missing, an expression that never fires) the reference is now.
"""

from __future__ import annotations

from enrichctl.oncalendar import elapses
from enrichctl.settings import ScheduleSettings

RUN_ALLOWANCE_MS = 30 * 60_000  # how long a scheduled run may take before its bars are due
ITERATIONS = 64
WINDOWS_MS = (3_600_000, 86_400_000, 8 * 86_400_000, 40 * 86_400_000, 400 * 86_400_000)
# expression -> (due, valid_from, valid_until): the answer holds for "now" in that interval.
_cache: dict[str, tuple[int, int, int]] = {}


def schedule_reference(schedule: ScheduleSettings, now: int) -> int:
    """The instant whose complete bars a healthy installation must hold at ``now``."""
    grace = schedule.randomized_delay_seconds * 1000 + RUN_ALLOWANCE_MS
    due = last_elapse(schedule.on_calendar, now - grace)
    return now if due is None else min(due, now)


def last_elapse(on_calendar: str, at: int) -> int | None:
    """The last time the calendar fired at or before ``at`` (epoch ms), or None."""
    cached = _cache.get(on_calendar)
    if cached is not None and cached[1] <= at < cached[2]:
        return cached[0]
    for window in WINDOWS_MS:
        fired = elapses(on_calendar, at - window, ITERATIONS)
        if fired is None:
            return None
        before = [t for t in fired if t <= at]
        if before:
            after = next((t for t in fired if t > at), None)
            _cache[on_calendar] = (before[-1], before[-1], after if after is not None else before[-1] + 1)
            return before[-1]
    return None
