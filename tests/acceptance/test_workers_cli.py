"""Scale-out at the command line, on the default SQLite database: ``run --worker`` with nothing
to join is a quiet no-op, and a second ``run`` while one is active exits 75 naming it."""

from __future__ import annotations

import json
import os
import socket
import time

from .workspace import AS_OF, Workspace

RUN = ("run", "--symbols", "AAPL", "--provider", "demo", "--as-of", AS_OF)


def test_run_worker_with_no_active_run_says_so_and_exits_0(workspace: Workspace) -> None:
    result = workspace(*RUN, "--worker")
    assert result.code == 0, result
    assert "no active run to join" in result.out.lower(), result
    assert "Traceback" not in result.err, result
    # It joined nothing and started nothing: no run in the history, no bars.
    if workspace.db_path.exists():
        assert workspace.query("SELECT count(*) FROM runs") == [(0,)]
        assert workspace.query("SELECT count(*) FROM bars") == [(0,)]
    as_json = workspace(*RUN, "--worker", "--json")
    assert as_json.code == 0, as_json
    doc = json.loads(as_json.out)
    assert (doc["status"], doc["run_id"], doc["message"]) == ("idle", None, "no active run to join")


def test_a_second_run_on_sqlite_exits_75_naming_the_active_run(workspace: Workspace) -> None:
    assert workspace("db", "upgrade").code == 0
    # A run in progress: its row and its lease, held by a live process on this host (this one).
    now = int(time.time() * 1000)
    host, pid = socket.gethostname(), os.getpid()
    workspace.execute(
        "INSERT INTO runs (id, trigger, status, provider, synthetic, host, pid, started_at, options, "
        "jobs_total, jobs_succeeded, jobs_failed, bars_fetched, bars_written, requests) "
        "VALUES (7, 'timer', 'running', 'demo', 1, ?, ?, ?, '{}', 1, 0, 0, 0, 0, 0)",
        (host, pid, now - 5_000),
    )
    workspace.execute(
        "INSERT INTO leases (name, run_id, host, pid, acquired_at, heartbeat_at, expires_at) "
        "VALUES ('run', 7, ?, ?, ?, ?, ?)",
        (host, pid, now - 5_000, now - 2_000, now + 600_000),
    )
    result = workspace(*RUN)
    assert result.code == 75, result
    lines = [line for line in (result.err + result.out).splitlines() if "run 7" in line]
    assert len(lines) == 1 and f"pid {pid}" in lines[0] and host in lines[0], result
    assert "Traceback" not in result.err, result
    # The active run is untouched and nothing else was started.
    assert workspace.query("SELECT id, status FROM runs") == [(7, "running")]
    assert workspace.query("SELECT run_id, pid FROM leases") == [(7, pid)]
    assert workspace.query("SELECT count(*) FROM bars") == [(0,)]
