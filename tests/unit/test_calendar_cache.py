"""The NYSE schedule is cached on disk: a second calendar loads it instead of rebuilding, gets
exactly the same sessions, and a damaged cache is rebuilt rather than believed."""

from __future__ import annotations

import numpy as np

from enrichctl.calendar import SessionCalendar, _cache_file, utc_date_ms


def test_a_cached_calendar_has_exactly_the_built_sessions(tmp_path):
    built = SessionCalendar(tmp_path)
    cached_file = _cache_file(tmp_path)
    assert cached_file is not None and cached_file.exists()
    loaded = SessionCalendar(tmp_path)
    span = (utc_date_ms("2024-06-28"), utc_date_ms("2024-07-09"))
    for name in ("day", "open", "close"):
        assert np.array_equal(getattr(built.sessions(*span), name), getattr(loaded.sessions(*span), name))
    # Jun 28, Jul 1, 2, 3 (early close), 5, 8: the 4th is a holiday, in the cached copy too.
    assert len(loaded.sessions(*span).day) == 6
    assert np.array_equal(built._close, loaded._close)


def test_a_damaged_cache_is_rebuilt(tmp_path):
    SessionCalendar(tmp_path)
    path = _cache_file(tmp_path)
    assert path is not None
    path.write_bytes(b"not an npz file")
    rebuilt = SessionCalendar(tmp_path)
    # 2024 had 252 sessions; Dec 31 starts (midnight New York) after this range's end.
    assert len(rebuilt.sessions(utc_date_ms("2024-01-01"), utc_date_ms("2024-12-31")).day) == 251
