"""``history RUN_ID`` shows one run's jobs, attempts, errors, requests and durations;
``history --status`` filters; ``run --rerun-failed`` re-runs only the failed jobs of the last run.
Against the fake Polygon over loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

from .fake_polygon_thread import fake_polygon, polygon_config
from .workspace import AS_OF, Workspace

REFUSED = {"status": "NOT_FOUND", "request_id": "r1", "message": "Unknown ticker BAD"}


def _hold_aapl(fake) -> None:
    demo = DemoProvider(SessionCalendar())
    series = Series("AAPL", AssetClass.STOCK, Timeframe.D1)
    asyncio.run(fake.hold_from(demo, series, 1_704_067_200_000, 1_717_545_600_000))


def test_history_of_one_run_shows_the_failed_job_and_rerun_failed_runs_only_it(machine: Workspace) -> None:
    with fake_polygon() as fake:
        _hold_aapl(fake)
        fake.canned("BAD", REFUSED)
        config = machine.write("polygon.toml", polygon_config(fake, symbols=("AAPL", "BAD")))
        base = ("--config", str(config))
        first = machine(*base, "run", "--as-of", AS_OF, "--since", "2024-01-01")
        assert first.code == 1, first

        detail = machine(*base, "history", "1", "--json")
        assert detail.code == 0, detail
        doc = json.loads(detail.out)
        jobs = {j["symbol"]: j for j in doc["jobs"]}
        assert doc["run_id"] == 1 and doc["status"] == "partial"
        assert jobs["AAPL"]["status"] == "succeeded" and jobs["AAPL"]["requests"] >= 1
        assert jobs["AAPL"]["tasks"][0]["bars_written"] == len(machine.bars("AAPL"))
        bad = jobs["BAD"]
        assert bad["status"] == "failed" and "Unknown ticker BAD" in bad["error"]
        assert bad["attempts"] >= 1 and bad["tasks"][0]["error"] and bad["duration_ms"] is not None
        table = machine(*base, "history", "1", env={"COLUMNS": "80"})
        assert table.code == 0 and "BAD" in table.out and "failed" in table.out, table
        assert all(len(line) <= 80 for line in table.out.splitlines()), table

        fake.canned("BAD", {"status": "OK", "request_id": "r2", "resultsCount": 0, "ticker": "BAD"})
        before = len(fake.requests)
        rerun = machine(*base, "run", "--rerun-failed", "--as-of", AS_OF, "--json")
        assert rerun.code == 0, rerun
        again = json.loads(rerun.out)
        assert [j["symbol"] for j in again["jobs"]] == ["BAD"], rerun
        assert "failed job(s) of run 1: BAD" in rerun.err, rerun
        # AAPL was not asked again (the reference data is asked for the whole universe).
        assert all("/BAD/" in r.path or r.path.startswith("/v3/reference/") for r in fake.requests[before:])
        nothing = machine(*base, "run", "--rerun-failed", "--as-of", AS_OF)
        assert nothing.code == 0 and "nothing to re-run" in nothing.out, nothing

    partial = json.loads(machine(*base, "history", "--status", "partial", "--json").out)
    assert [r["run_id"] for r in partial["runs"]] == [1]
    succeeded = json.loads(machine(*base, "history", "--status", "succeeded", "--json").out)
    assert [r["run_id"] for r in succeeded["runs"]] == [2]
    wrong = machine(*base, "history", "--status", "fine")
    assert wrong.code == 2 and "partial" in wrong.err, wrong
    missing = machine(*base, "history", "99")
    assert missing.code == 1 and "no run 99" in missing.err, missing
