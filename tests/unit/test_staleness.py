"""Staleness is judged against the schedule's last due run, read from systemd's calendar."""

from __future__ import annotations

import shutil

import pytest

from enrichctl.calendar import utc_date_ms
from enrichctl.settings import ScheduleSettings
from enrichctl.staleness import RUN_ALLOWANCE_MS, last_elapse, schedule_reference

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
HOUR = 3_600_000


def test_the_last_elapse_of_a_daily_timer() -> None:
    day = utc_date_ms("2024-06-04")
    assert last_elapse("*-*-* 01:30:00 UTC", day + 15 * HOUR) == day + int(1.5 * HOUR)
    assert last_elapse("*-*-* 01:30:00 UTC", day + HOUR) == day - 24 * HOUR + int(1.5 * HOUR)
    assert last_elapse("Mon..Fri 22:00 UTC", utc_date_ms("2024-06-09") + 12 * HOUR) == \
        utc_date_ms("2024-06-07") + 22 * HOUR  # Sunday noon: Friday's run


def test_the_reference_waits_for_the_randomised_delay_and_the_run() -> None:
    schedule = ScheduleSettings(on_calendar="*-*-* 01:30:00 UTC", randomized_delay_seconds=900)
    day = utc_date_ms("2024-06-05")
    due = day + int(1.5 * HOUR)
    grace = 900_000 + RUN_ALLOWANCE_MS
    # Just after 01:30 the run may not have finished: the previous night's run is the reference.
    assert schedule_reference(schedule, due + grace - 1) == due - 24 * HOUR
    assert schedule_reference(schedule, due + grace) == due


def test_a_schedule_that_never_fires_judges_against_now() -> None:
    never = ScheduleSettings(on_calendar="2001-01-01 00:00:00 UTC")
    now = utc_date_ms("2024-06-05")
    assert schedule_reference(never, now) == now
