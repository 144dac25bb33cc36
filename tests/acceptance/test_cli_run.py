"""``enrichctl run``: the first run on a clean machine, the missing key, idempotency, the plan,
the JSON summary and clean output when piped; on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .workspace import AS_OF, LAST_BAR, SINCE, NewMachine, Workspace

LATER = "2024-06-12T00:00"  # one market week after AS_OF: 5 more day bars per stock
RUN = ("run", "--symbols", "AAPL,MSFT", "--provider", "demo", "--since", SINCE, "--as-of", AS_OF)


def test_first_run_creates_and_fills_the_database_where_it_is_configured(filled: Workspace) -> None:
    first = filled.results[0]
    sqlite_file = Path(filled.env["XDG_DATA_HOME"]) / "enrichctl" / "enrichctl.db"
    if filled.backend == "sqlite":  # the default: a file in the XDG data directory
        assert sqlite_file.is_file(), first
    else:  # DATABASE_URL names the database: no SQLite file on the side
        assert not sqlite_file.parent.exists(), first
        assert {"bars", "indicators", "series", "runs"} <= filled.tables()
    assert sorted(p.name for p in filled.root.iterdir()) == ["config", "data", "home"]  # no litter in cwd
    for symbol in ("AAPL", "MSFT"):
        bars = filled.bars(symbol)
        assert len(bars) > 300, f"{symbol}: {len(bars)} bars"
        assert filled.query("SELECT watermark FROM series WHERE symbol = ?", (symbol,)) == [(bars[-1][2],)]
    # The summary says the data is synthetic, on stdout where a piped summary ends up too.
    assert "synthetic" in first.out and "demo" in first.out, first
    assert "succeeded" in first.out and "2/2 symbols" in first.out, first
    assert filled.query("SELECT DISTINCT synthetic, provider FROM series") == [(1, "demo")]


def test_without_a_provider_or_key_run_exits_78_naming_what_to_set(machine: Workspace) -> None:
    result = machine("run", "--symbols", "AAPL")
    assert result.code == 78, result
    assert len(result.err_lines) == 1, result
    line = result.err
    assert "POLYGON_API_KEY" in line and "--provider demo" in line, result
    assert "Traceback" not in line and result.out == "", result
    # It never falls back to synthetic data: no bars and no run were recorded.
    if "runs" in machine.tables():
        assert machine.query("SELECT count(*) FROM bars") == [(0,)]
        assert machine.query("SELECT count(*) FROM runs") == [(0,)]


@pytest.fixture(scope="module")
def repeated(new_machine: NewMachine, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same run twice (as a user types it, with --since), then a week later: the results
    and the data tables after each step."""
    ws = new_machine(tmp_path_factory.mktemp("repeated"))
    steps: dict = {"ws": ws}
    steps["first"] = ws(*RUN, "--json")
    steps["after_first"] = _data(ws)
    steps["second"] = ws(*RUN)
    steps["after_second"] = _data(ws)
    steps["later"] = ws(*RUN[:-1], LATER, "--json")
    steps["after_later"] = _data(ws)
    return steps


def _data(ws: Workspace) -> dict[str, list[tuple]]:
    """The data a user relies on: bars, indicators and the series watermarks."""
    return {
        "bars": ws.query("SELECT * FROM bars ORDER BY symbol, timeframe, ts"),
        "indicators": ws.query("SELECT * FROM indicators ORDER BY symbol, timeframe, ts"),
        "series": ws.query(
            "SELECT symbol, timeframe, watermark, first_ts, bar_count, indicator_set, quality_score, "
            "issue_count FROM series ORDER BY symbol, timeframe"
        ),
        "issues": ws.query("SELECT * FROM quality_issues ORDER BY id"),
    }


def test_run_json_is_one_document_with_the_documented_keys(repeated: dict) -> None:
    first = repeated["first"]
    assert first.code == 0, first
    doc = json.loads(first.out)
    assert {"run_id", "status", "jobs", "bars_fetched", "bars_written", "requests"} <= doc.keys()
    assert doc["run_id"] == 1 and doc["status"] == "succeeded" and doc["synthetic"] is True
    assert sorted(j["symbol"] for j in doc["jobs"]) == ["AAPL", "MSFT"]
    assert all(j["status"] == "succeeded" and j["bars_written"] > 300 for j in doc["jobs"])
    stored = len(repeated["after_first"]["bars"])
    assert doc["bars_fetched"] == doc["bars_written"] == stored
    assert doc["requests"] == 2  # one provider request per series


def test_second_identical_run_fetches_nothing_and_says_so(repeated: dict) -> None:
    second = repeated["second"]
    assert second.code == 0, second
    assert "up to date" in second.out, second
    assert "0 bars fetched, 0 written, 0 provider requests" in second.out, second


def test_second_identical_run_leaves_the_data_byte_identical(repeated: dict) -> None:
    before, after = repeated["after_first"], repeated["after_second"]
    for table in before:
        assert after[table] == before[table], f"{table} changed on a run that had nothing to do"


def test_a_later_run_only_appends_the_new_bars(repeated: dict) -> None:
    later, before, after = repeated["later"], repeated["after_second"], repeated["after_later"]
    assert later.code == 0, later
    doc = json.loads(later.out)
    assert [j["bars_written"] for j in doc["jobs"]] == [5, 5]  # 4, 5, 6, 7 and 10 June
    for table in ("bars", "indicators"):
        old, new = set(before[table]), set(after[table])
        assert old <= new, f"stored {table} rows changed"
        watermark = {row[0]: row[2] for row in before["series"]}
        added = new - old
        assert len(added) == 10 and all(row[2] > watermark[row[0]] for row in added)


def test_dry_run_prints_the_plan_and_changes_nothing(filled: Workspace) -> None:
    before = filled.dump()
    dry = ("run", "--symbols", "AAPL,NVDA", "-t", "1d,1h", "--provider", "demo", "--as-of", LATER, "--dry-run")
    text, as_json = filled.many([dry, (*dry, "--json")])
    assert filled.dump() == before, "a dry run changed the database"

    assert text.code == 0, text
    for expected in ("AAPL/1d", "incremental", "NVDA/1h", "new", "requests", "nothing is changed"):
        assert expected in text.out, text
    doc = json.loads(as_json.out)
    assert doc["status"] == "planned" and doc["run_id"] is None
    tasks = {t["series"]: t for t in doc["plan"]["tasks"]}
    assert {s: t["mode"] for s, t in tasks.items()} == {
        "AAPL/1d": "incremental", "AAPL/1h": "new", "NVDA/1d": "new", "NVDA/1h": "new",
    }
    assert tasks["AAPL/1d"]["watermark"] == LAST_BAR
    assert tasks["AAPL/1d"]["to"] == "2024-06-10T04:00:00Z"
    assert all(t["requests"] >= 1 for t in tasks.values())
    assert doc["plan"]["requests"] == sum(t["requests"] for t in tasks.values())


def test_dry_run_on_a_new_machine_creates_no_database(machine: Workspace) -> None:
    result = machine("run", "--symbols", "AAPL", "--provider", "demo", "--as-of", AS_OF, "--dry-run")
    assert result.code == 0 and "nothing is changed" in result.out, result
    # A dry run against a shared database must not upgrade its schema under the other hosts.
    assert machine.tables() == set(), f"a dry run created {sorted(machine.tables())}"
    assert not machine.db_path.exists()


def test_summary_redirected_to_a_file_carries_no_terminal_control_sequences(filled: Workspace) -> None:
    first = filled.results[0]  # stderr on a terminal, stdout into a file
    assert "\x1b[" in first.err, "the terminal got no colours: the terminal path did not run"
    assert "\x1b" not in first.out and "\r" not in first.out, repr(first.out)
    assert "succeeded" in first.out
