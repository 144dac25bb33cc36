"""Tables fit a width by dropping their least useful columns, never by cutting a cell."""

from __future__ import annotations

from rich.console import Console

from enrichctl.cli.tablefit import Col, bar_time, fitted, seconds, when

ROWS = [
    {"symbol": "X:BTCUSD", "status": "succeeded", "at": "2024-06-05T00:00:00Z", "n": 123456,
     "error": "Polygon /v2/aggs failed (HTTP 503) after 4 attempts; the circuit opened"},
    {"symbol": "AAPL", "status": "never_run", "at": None, "n": 0, "error": None},
]
COLS = (
    Col("symbol", lambda r: r["symbol"]),
    Col("status", lambda r: r["status"]),
    Col("time", lambda r: when(r["at"]), 1),
    Col("error", lambda r: r["error"] or "-", 2, wrap=True),
    Col("count", lambda r: str(r["n"]), 3, right=True),
    Col("extra", lambda r: "x" * 30, 4),
)


def _render(width: int) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(fitted("t", COLS, ROWS, width))
    return console.export_text().splitlines()


def test_at_80_columns_the_least_useful_columns_go_and_nothing_is_cut() -> None:
    lines = _render(80)
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    assert "…" not in text
    assert "succeeded" in text and "never_run" in text and "2024-06-05 00:00 UTC" in text
    header = next(line for line in lines if "symbol" in line)
    assert "extra" not in header and "count" in header  # the least useful goes first, only as needed
    assert "error" in header  # wraps instead
    assert "circuit" in text  # the wrapped text is all there


def test_a_wide_console_shows_every_column() -> None:
    header = next(line for line in _render(200) if "symbol" in line)
    for name in ("symbol", "status", "time", "error", "count", "extra"):
        assert name in header


def test_a_column_of_priority_zero_is_never_dropped() -> None:
    header = next(line for line in _render(30) if "symbol" in line)
    assert "symbol" in header and "status" in header


def test_times_carry_their_zone_and_day_bars_are_dates_in_new_york() -> None:
    assert when("2024-06-05T13:30:00.123Z") == "2024-06-05 13:30 UTC"
    # Day bars start at midnight New York: 04:00 UTC in summer, 05:00 UTC in winter.
    assert bar_time("2024-06-03T04:00:00Z", "1d") == "2024-06-03"
    assert bar_time("2024-01-02T05:00:00Z", "1w") == "2024-01-02"
    assert bar_time("2024-06-03T14:00:00Z", "1h") == "2024-06-03 14:00 UTC"
    assert bar_time(None, "1d") == when(None) == "-"
    assert [seconds(x) for x in (0.42, 12.4, 185, 7500)] == ["0.4s", "12s", "3m05s", "2h05m"]
