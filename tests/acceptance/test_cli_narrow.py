"""At 80 columns every table fits without cutting a status, a time or a number; a wider terminal
shows every column; day bars show as dates, instants with their zone."""

from __future__ import annotations

import re

import pytest

from .workspace import AS_OF, Workspace

NARROW = {"COLUMNS": "80"}
WIDE = {"COLUMNS": "200"}
STATUSES = ("succeeded", "never_run", "failed", "partial")


def _assert_fits(result, width: int = 80) -> None:
    assert result.code == 0, result
    for line in result.out.splitlines():
        assert len(line) <= width, f"{len(line)} columns: {line}"
        assert "…" not in line, f"a cell was cut: {line}"


@pytest.mark.parametrize("argv", [("status",), ("status", "AAPL"), ("history",)])
def test_tables_fit_80_columns_and_keep_whole_words(filled: Workspace, argv: tuple[str, ...]) -> None:
    result = filled(*argv, env=NARROW)
    _assert_fits(result)
    assert "succeeded" in result.out, result
    # Every instant is to the minute with its zone; no bare "2024-06-03 04:00:00".
    shown = "\n".join(line for line in result.out.splitlines() if "scheduled run" not in line)
    assert not re.search(r"\d\d:\d\d:\d\d", shown), result  # (the schedule is as configured)
    for stamp in re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d\S*(?: \S+)?", shown):
        assert stamp.rstrip(",").endswith("UTC"), stamp


def test_a_wide_terminal_shows_every_column(filled: Workspace) -> None:
    narrow, wide = filled("status", env=NARROW), filled("status", env=WIDE)
    narrow_header = next(line for line in narrow.out.splitlines() if line.startswith("┃ symbol"))
    wide_header = next(line for line in wide.out.splitlines() if line.startswith("┃ symbol"))
    for column in ("last success", "tries", "class"):
        assert column in wide_header, wide.out
    assert "last success" not in narrow_header, narrow.out
    # The day bars are dates in both: the date they cover in New York.
    aapl = next(line for line in wide.out.splitlines() if "│ AAPL" in line)
    assert "2024-06-03" in aapl and "04:00" not in aapl, aapl


def test_the_run_summary_fits_80_columns(machine: Workspace) -> None:
    result = machine("run", "--provider", "demo", "--symbols", "AAPL,X:BTCUSD", "-t", "1d,1h",
                     "--as-of", AS_OF, "--since", "2024-05-01", env=NARROW)
    _assert_fits(result)
    rows = [line for line in result.out.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and all("succeeded" in row for row in rows), result
    assert re.search(r"run 1 succeeded", result.out), result
