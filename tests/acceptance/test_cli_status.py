"""What a person or a monitor reads: ``status``, ``history``, ``metrics``, and ``pause``/``resume``;
on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from .workspace import AS_OF, LAST_BAR, Workspace

# A small configured universe, all of it run at the real current time: a healthy database.
HEALTHY_CONFIG = """\
provider = "demo"
universe = [{ symbol = "AAPL" }, { symbol = "X:BTCUSD", asset_class = "crypto" }]
[history_days]
1d = 400
"""


@pytest.fixture(scope="module")
def read(filled: Workspace) -> dict:
    """The read-only commands on the filled database, run side by side."""
    commands = {
        "status": ("status",),
        "status_aapl": ("status", "AAPL"),
        "status_check_json": ("status", "--json", "--check"),
        "history": ("history",),
        "history_json": ("history", "--json", "--limit", "1"),
    }
    return dict(zip(commands, filled.many(commands.values()), strict=True))


def test_status_shows_one_row_per_symbol_in_full(read: dict) -> None:
    result = read["status"]
    assert result.code == 0, result
    rows = {line.split()[1]: line for line in result.out.splitlines() if line.startswith("│")}
    # A day bar is shown as the date it covers, not as the UTC instant New York midnight is.
    assert "succeeded" in rows["AAPL"] and "2024-06-03" in rows["AAPL"], result
    assert "04:00" not in rows["AAPL"], result
    assert "never_run" in rows["NVDA"], result  # configured by default, never run
    assert "bars stored" in result.out


def test_status_of_one_symbol_shows_its_series_and_jobs(read: dict, filled: Workspace) -> None:
    result = read["status_aapl"]
    assert result.code == 0, result
    assert result.out.startswith("AAPL (stock): succeeded"), result
    series = next(line for line in result.out.splitlines() if "│ 1d" in line)
    assert str(len(filled.bars("AAPL"))) in series.split("│")[3], series  # the bar count column


def test_status_json_is_the_overview_document_and_check_fails_on_stale_series(
    read: dict, filled: Workspace
) -> None:
    result = read["status_check_json"]
    # The bars end on 3 June 2024: against the real clock every series is stale.
    assert result.code == 3, result
    doc = json.loads(result.out)
    symbols = {s["symbol"]: s for s in doc["processing_symbols"]}
    assert symbols["AAPL"]["status"] == "succeeded" and symbols["AAPL"]["stale"] is True
    assert symbols["AAPL"]["last_bar"] == LAST_BAR
    assert symbols["NVDA"]["status"] == "never_run"
    assert doc["totals"]["bars"] == filled.query("SELECT count(*) FROM bars")[0][0]
    assert doc["scheduler"]["paused"] is False


def test_history_lists_the_runs(read: dict) -> None:
    table, one = read["history"], read["history_json"]
    assert table.code == 0 and "cli" in table.out and "succeeded" in table.out, table
    doc = json.loads(one.out)
    assert doc["count"] == 1 and len(doc["runs"]) == 1
    run = doc["runs"][0]
    assert run["run_id"] == 1 and run["trigger"] == "cli" and run["status"] == "succeeded"
    assert run["bars_written"] > 0 and run["duration_s"] is not None


def test_a_fresh_run_at_the_real_time_is_healthy_and_measured(machine: Workspace) -> None:
    config = machine.write("healthy.toml", HEALTHY_CONFIG)
    run = machine("--config", str(config), "run")
    assert run.code == 0, run
    check, metrics = machine.many([("--config", str(config), "status", "--check"),
                                     ("--config", str(config), "metrics", "--json")])
    assert check.code == 0, check
    assert "health: healthy" in check.out, check

    doc = json.loads(metrics.out)
    fetch, compute, quality = doc["fetch_pipeline"], doc["compute_pipeline"], doc["data_quality"]
    stored = machine.query("SELECT count(*) FROM bars")[0][0]
    assert "api_quota_remaining" in fetch
    assert fetch["total_requests"] == fetch["successful_requests"] == 2 and fetch["success_rate"] == 1.0
    assert fetch["records_fetched"] == fetch["records_inserted"] == stored
    assert compute["features_computed"] > 0 and compute["success_rate"] == 1.0
    assert quality["quality_score"] == 1.0 and quality["records_validated"] == stored


def test_pause_skips_timer_runs_until_resume(filled: Workspace, tmp_path: Path) -> None:
    ws = filled.clone(tmp_path)
    timer_run = ("run", "--trigger", "timer", "--symbols", "AAPL", "--provider", "demo", "--as-of", AS_OF, "--json")

    paused = ws("pause", "--reason", "maintenance")
    assert paused.code == 0 and "maintenance" in paused.out, paused

    skipped = ws(*timer_run)
    assert skipped.code == 0, skipped
    assert json.loads(skipped.out)["status"] == "skipped"
    overview = json.loads(ws("status", "--json").out)
    scheduler = overview["scheduler"]
    assert scheduler["paused"] is True and scheduler["paused_reason"] == "maintenance"
    assert scheduler["paused_by"]
    assert datetime.fromisoformat(scheduler["paused_since"])  # when, as an ISO instant
    assert (overview["last_run"]["trigger"], overview["last_run"]["status"]) == ("timer", "skipped")

    forced = ws(*timer_run, "--force")
    assert forced.code == 0 and json.loads(forced.out)["status"] == "succeeded", forced

    resumed = ws("resume")
    assert resumed.code == 0 and "resumed" in resumed.out, resumed
    after = ws(*timer_run)
    assert after.code == 0 and json.loads(after.out)["status"] == "succeeded", after
