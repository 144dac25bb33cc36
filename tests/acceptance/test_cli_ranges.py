"""Date ranges: ``run --since D --until D`` backfills exactly that range and a later plain run
continues to now; ``--full-refresh --since D`` refetches from D; a future ``--since`` and an
ambiguous timeframe are usage errors. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from .workspace import AS_OF, LAST_BAR, NewMachine, Workspace

DEMO = ("--provider", "demo", "--symbols", "AAPL", "--as-of", AS_OF)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _stamps(ws: Workspace) -> list[int]:
    return [row[2] for row in ws.bars("AAPL")]


def test_a_backfill_covers_exactly_its_range_and_a_plain_run_continues_to_now(
    new_machine: NewMachine, tmp_path: Path
) -> None:
    ws = new_machine(tmp_path / "ranged")
    first = ws("run", *DEMO, "--since", "2024-01-01", "--until", "2024-02-29", "--json")
    assert first.code == 0, first
    stamps = _stamps(ws)
    assert _day(stamps[0]) == "2024-01-02" and _day(stamps[-1]) == "2024-02-29", first
    later = ws("run", *DEMO, "--json")
    assert later.code == 0, later
    assert json.loads(later.out)["bars_written"] > 0
    status = json.loads(ws("status", "AAPL", "--json").out)
    assert status["series"][0]["last_bar"] == LAST_BAR
    # An earlier range goes into the stored series without touching what is after it.
    older = ws("run", *DEMO, "--since", "2023-11-01", "--until", "2023-11-30", "--json")
    assert older.code == 0 and json.loads(older.out)["bars_written"] == 21, older
    # The indicators of the whole series were recomputed with the older bars in it; the only
    # problem is the December nobody asked for.
    verify = ws("verify", "AAPL", "--recompute", "--json")
    checked = json.loads(verify.out)["series"][0]
    assert checked["max_indicator_diff"] == 0, verify
    assert [i["detail"] for i in checked["issues"]] == ["20 sessions missing from 2023-12-01 to 2023-12-29"]
    # The whole store is what one fetch of Nov 2023 plus Jan 2024 .. now gives a new machine.
    fresh = new_machine(tmp_path / "fresh")
    assert fresh("run", *DEMO, "--since", "2024-01-01").code == 0
    assert fresh("run", *DEMO, "--since", "2023-11-01", "--until", "2023-11-30").code == 0
    assert [row[:7] for row in ws.bars("AAPL")] == [row[:7] for row in fresh.bars("AAPL")]


def test_full_refresh_since_refetches_from_that_day_and_keeps_older_bars(
    new_machine: NewMachine, tmp_path: Path
) -> None:
    ws = new_machine(tmp_path / "refresh")
    assert ws("run", *DEMO, "--since", "2024-01-01").code == 0
    before = ws.bars("AAPL")
    plan = ws("run", *DEMO, "--full-refresh", "--since", "2024-05-01", "--dry-run", "--json")
    task = json.loads(plan.out)["plan"]["tasks"][0]
    assert task["mode"] == "range" and task["from"] == "2024-05-01T00:00:00Z", plan
    refresh = ws("run", *DEMO, "--full-refresh", "--since", "2024-05-01", "--json")
    doc = json.loads(refresh.out)
    from_may = [b for b in before if _day(b[2]) >= "2024-05-01"]
    assert doc["bars_fetched"] == len(from_may), refresh  # refetched from 1 May, not everything
    assert ws.bars("AAPL") == before  # same data again; nothing older was dropped


def test_a_future_since_and_an_ambiguous_timeframe_are_usage_errors(machine: Workspace) -> None:
    future = machine("run", "--provider", "demo", "--since", "2999-01-01")
    assert future.code == 2 and len(future.err_lines) == 1, future
    assert "--since" in future.err and "future" in future.err, future
    reversed_range = machine("run", "--provider", "demo", "--since", "2024-03-01", "--until", "2024-01-01")
    assert reversed_range.code == 2 and "after --until" in reversed_range.err, reversed_range
    month = machine("run", "--provider", "demo", "--timeframes", "1M")
    assert month.code == 2 and len(month.err_lines) == 1, month
    assert "ambiguous" in month.err and "'1m'" in month.err and "1d" in month.err, month
    assert machine.tables() == set() or "bars" not in machine.tables() or machine.query(
        "SELECT count(*) FROM bars")[0][0] == 0
