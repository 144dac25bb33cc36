"""The calendar questions ``systemd-analyze calendar`` (the timer's own parser) answers.

When the timer fires next, the times it fired, and whether an ``OnCalendar=`` expression is
valid. Each answer is None when ``systemd-analyze`` is not installed. Below the use cases, so
that staleness (judged against the schedule), the service and the unit renderer ask the same.
"""

from __future__ import annotations

import calendar
import functools
import os
import re
import shutil
import subprocess
import time

_ANALYZE_TIMEOUT_S = 10.0

_ELAPSE_RE = re.compile(r"Next elapse: (?:\w+ )?(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(\.\d+)? UTC")
# expression -> (base_ms, next_ms): the answer holds for any "now" in [base_ms, next_ms).
_elapse_cache: dict[str, tuple[int, int]] = {}


def next_elapse(on_calendar: str, now_ms: int | None = None) -> int | None:
    """When the calendar next fires after ``now_ms`` (default: now), epoch ms; None when it
    never does or ``systemd-analyze`` is missing or rejects the expression."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    cached = _elapse_cache.get(on_calendar)
    if cached is not None and cached[0] <= now < cached[1]:
        return cached[1]
    result = _analyze(["calendar", "--iterations=1", f"--base-time=@{now / 1000:.3f}", on_calendar])
    if result is None or result.returncode != 0:
        return None
    match = _ELAPSE_RE.search(result.stdout)
    if match is None:  # "Next elapse: never"
        return None
    stamp = time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    fraction = float(match.group(2)) if match.group(2) else 0.0
    elapse = calendar.timegm(stamp) * 1000 + round(fraction * 1000)
    _elapse_cache[on_calendar] = (now, elapse)
    return elapse


_ITER_RE = re.compile(r"(?:Next elapse|Iter\. #\d+): (?:\w+ )?(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC")


def elapses(on_calendar: str, base_ms: int, iterations: int) -> list[int] | None:
    """The first ``iterations`` times the calendar fires after ``base_ms`` (epoch ms, to the
    second); None when ``systemd-analyze`` is missing or rejects the expression."""
    result = _analyze(["calendar", f"--iterations={iterations}", f"--base-time=@{base_ms / 1000:.3f}",
                       on_calendar])
    if result is None or result.returncode != 0:
        return None
    return [calendar.timegm(time.strptime(m, "%Y-%m-%d %H:%M:%S")) * 1000
            for m in _ITER_RE.findall(result.stdout)]


@functools.lru_cache(maxsize=32)
def calendar_check(expr: str) -> str | None:
    """Why ``expr`` is not a valid ``OnCalendar=`` expression, or None (valid, or unknown
    because ``systemd-analyze`` is not installed). Cached: validation may ask on every load."""
    if not expr.strip():
        return "the calendar expression is empty"
    result = _analyze(["calendar", expr])
    if result is None or result.returncode == 0:
        return None
    return (result.stderr.strip() or result.stdout.strip()).splitlines()[-1]


def _analyze(args: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run ``systemd-analyze`` in UTC and the C locale; None when it cannot be run."""
    binary = shutil.which("systemd-analyze")
    if binary is None:
        return None
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C", "SYSTEMD_LOG_LEVEL": "err", "SYSTEMD_COLORS": "0"}
    try:
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, env=env, timeout=_ANALYZE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
