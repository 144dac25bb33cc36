"""Storage that fails under a run, at the command line: a PostgreSQL server that goes away mid-run
is 'try later' (75) in one line; a database that cannot be written (an immutable file, a
read-only directory, a full disk) is a fault for a person (78) naming the cause, never 'another
run started'; simultaneous first starts on PostgreSQL all work, in one run, and on a new SQLite
file one runs and the others exit 75 (or run after it)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from integration.tcp_proxy import TcpProxy
from sqlalchemy.engine import make_url

from .workspace import AS_OF, SINCE, PostgresServer, Result, Workspace

SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,NVDA,META,JPM,V,XOM,KO,PEP,WMT"
RUN = ("run", "--provider", "demo", "--as-of", AS_OF)
CUT_TIMEOUT_S = 60


def _one_error_line(result) -> str:
    """The one error line (log lines go to stderr too)."""
    lines = [line for line in result.err.splitlines() if line.startswith("enrichctl: error:")]
    assert "Traceback" not in result.err and "internal error" not in result.err, result
    assert len(lines) == 1, result
    return lines[0]


@pytest.mark.postgres
def test_three_first_starts_on_an_empty_postgresql_database_join_one_run(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # A few rounds: the losing starts race the winner's migration, then its run row and lease.
    # Twelve symbols at two timeframes keep the run going for seconds, so a start that a loaded
    # machine delays still finds it active; one that comes after it ended runs on its own, after.
    joined = 0
    for round_ in range(3):
        ws = Workspace(tmp_path / f"round{round_}", database=postgres_server.create())
        results = ws.many([(*RUN, "--symbols", SYMBOLS, "--timeframes", "1d,1h", "--since", SINCE)] * 3)
        assert [r.code for r in results] == [0, 0, 0], [str(r) for r in results]
        runs = ws.query("SELECT id, status, started_at, finished_at FROM runs ORDER BY id")
        assert {status for _, status, _, _ in runs} == {"succeeded"}, runs
        for (_, _, _, finished), (_, _, started, _) in zip(runs, runs[1:]):
            assert finished <= started, runs  # never two runs at once
        assert ws.query("SELECT count(*) FROM workers") == [(3,)]
        per_run = len(SYMBOLS.split(","))  # a job per symbol
        assert ws.query("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == [(per_run * len(runs),)]
        joined += len(runs) == 1
    assert joined >= 1, "in no round did the three starts join one run"


def test_three_first_starts_on_a_new_sqlite_file_run_once_and_leave_it_usable(tmp_path: Path) -> None:
    # A few rounds: the losing starts race the winner's migration, then its run row and lease.
    for round_ in range(3):
        ws = Workspace(tmp_path / f"round{round_}")
        results = ws.many([(*RUN, "--symbols", "AAPL,MSFT")] * 3)
        codes = [r.code for r in results]
        assert set(codes) <= {0, 75} and 0 in codes, [str(r) for r in results]
        for r in results:
            assert "Traceback" not in r.err and "internal error" not in r.err, r
            if r.code == 75:
                assert "another run" in _one_error_line(r) or "active" in _one_error_line(r), r
        # One run, or each after the other: never two at once, never a half-made schema.
        assert ws.query("SELECT status FROM runs") == [("succeeded",)] * codes.count(0)
        assert ws.query("SELECT symbol, count(*) FROM jobs WHERE status = 'succeeded' GROUP BY symbol "
                        "ORDER BY symbol") == [("AAPL", codes.count(0)), ("MSFT", codes.count(0))]
        status = ws("status", "--json")
        assert status.code == 0, status
        assert json.loads(status.out)["totals"]["succeeded"] == 2


@pytest.mark.postgres
def test_a_postgresql_server_cut_mid_run_exits_75_in_one_line_and_loses_nothing(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    db = postgres_server.create()
    ws = Workspace(tmp_path, database=db)
    direct = make_url(db.url)
    with TcpProxy((direct.host or "127.0.0.1", direct.port or 5432)) as proxy:
        env = {**ws.env, "DATABASE_URL": direct.set(port=proxy.port).render_as_string(hide_password=False),
               "ENRICHCTL_MAX_CONCURRENT_SYMBOLS": "1"}
        argv = [ws.exe, *RUN, "--symbols", SYMBOLS, "--timeframes", "1d,1h", "--since", SINCE]
        proc = subprocess.Popen(argv, cwd=ws.root, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + CUT_TIMEOUT_S
            while _succeeded(ws) < 2:
                assert proc.poll() is None, "the run ended before the cut"
                assert time.monotonic() < deadline, "no job finished"
                time.sleep(0.01)
            proxy.cut()
            kept = ws.query("SELECT count(*) FROM bars")[0][0]
            out, err = proc.communicate(timeout=CUT_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(out, err)
    assert proc.returncode == 75, err
    assert "Traceback" not in err and "internal error" not in err, err
    # Log lines go to stderr too; the user's error is one line among them.
    errors = [line for line in err.splitlines() if line.startswith("enrichctl: error:")]
    assert len(errors) == 1 and "database connection lost" in errors[0], err
    assert ws.query("SELECT count(*) FROM jobs WHERE status <> 'succeeded'")[0][0] > 0, \
        "the cut came after the run had finished"
    # Nothing committed before the cut is lost; the next run (the server is back) completes it,
    # and every series' watermark tells the truth about its bars.
    assert ws.query("SELECT count(*) FROM bars")[0][0] >= kept > 0
    again = ws(*RUN, "--symbols", SYMBOLS, "--timeframes", "1d,1h", "--since", SINCE)
    assert again.code == 0, again
    untrue = ws.query(
        "SELECT s.symbol, s.timeframe FROM series s WHERE s.watermark IS DISTINCT FROM "
        "(SELECT max(ts) FROM bars b WHERE b.symbol = s.symbol AND b.timeframe = s.timeframe)")
    assert untrue == []
    assert ws.query("SELECT count(DISTINCT symbol) FROM bars") == [(12,)]


def _succeeded(ws: Workspace) -> int:
    if "jobs" not in ws.tables():
        return 0
    return ws.query("SELECT count(*) FROM jobs WHERE status = 'succeeded'")[0][0]


def test_an_immutable_database_file_is_a_fault_not_another_run(workspace: Workspace) -> None:
    assert workspace(*RUN, "--symbols", "AAPL").code == 0
    before = workspace.dump()
    if subprocess.run(["chattr", "+i", str(workspace.db_path)], capture_output=True).returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("chattr +i does not work here, and root ignores a read-only mode")
        workspace.db_path.chmod(0o444)
    try:
        result = workspace(*RUN, "--symbols", "AAPL,MSFT", "--as-of", "2024-06-07T00:00")
    finally:
        subprocess.run(["chattr", "-i", str(workspace.db_path)], capture_output=True)
        workspace.db_path.chmod(0o644)
    line = _one_error_line(result)
    assert result.code == 78, result
    assert "readonly" in line or "read-only" in line, result
    assert "another run" not in line, result
    assert workspace.dump() == before


@contextmanager
def _read_only_directory(directory: Path) -> Iterator[None]:
    """``directory`` unwritable for this process. Root ignores mode bits, so as root it is made
    immutable (``chattr +i``) or, where the file system has no such flag, bind-mounted read-only."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        undo = [["chmod", "755", str(directory)]]
    elif subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0:
        undo = [["chattr", "-i", str(directory)]]
    elif (subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True).returncode == 0
          and subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], capture_output=True).returncode == 0):
        undo = [["umount", "-l", str(directory)]]
    else:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)
        pytest.skip("running as root, and neither chattr +i nor a read-only bind mount works here")
    try:
        assert not os.access(directory, os.W_OK), "the directory is still writable: nothing is tested"
        yield
    finally:
        for argv in undo:
            subprocess.run(argv, capture_output=True, check=True)


@pytest.mark.parametrize("database", ["new", "existing"])
def test_a_read_only_database_directory_exits_78_naming_it(workspace: Workspace, database: str) -> None:
    directory = workspace.db_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    if database == "existing":
        assert workspace(*RUN, "--symbols", "AAPL").code == 0
        before = workspace.dump()
    with _read_only_directory(directory):
        result = workspace(*RUN, "--symbols", "AAPL,MSFT", "--as-of", "2024-06-07T00:00")
        status = workspace("status")
    for r in (result, status):
        line = _one_error_line(r)
        assert r.code == 78, r
        assert f"the directory {directory} " in line, r
        assert "read-only" in line and "another run" not in line, r
    if database == "existing":
        assert workspace.dump() == before
        assert workspace("status").code == 0
    else:
        assert not workspace.db_path.exists()


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 600 KiB tmpfs: a disk that fills up under the first run."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True
    ).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_the_run_at_once_with_the_cause(workspace: Workspace, tiny_disk: Path) -> None:
    env = {"ENRICHCTL_DATABASE_URL": f"sqlite:///{tiny_disk / 'enrichctl.db'}",
           "ENRICHCTL_MAX_RETRIES": "3", "ENRICHCTL_RETRY_DELAY_SECONDS": "1"}
    result = workspace(*RUN, "--symbols", "AAPL,MSFT,GOOGL", "--since", "2015-01-01", env=env)
    assert result.code == 78, result
    assert "Traceback" not in result.err and "internal error" not in result.err, result
    assert "disk is full" in result.err, result
    # Not retried: no job made a second attempt against a disk that stays full.
    with sqlite3.connect(f"file:{tiny_disk / 'enrichctl.db'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT max(attempts) FROM jobs").fetchone()[0] == 1


def test_verify_reports_a_page_overwritten_with_garbage(workspace: Workspace) -> None:
    assert workspace(*RUN, "--symbols", "AAPL,MSFT", "--since", SINCE).code == 0
    assert workspace("verify").code == 0
    # A page of the indicators table: plain verify never reads it, only SQLite's check does.
    with sqlite3.connect(workspace.db_path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        page = conn.execute("SELECT pageno FROM dbstat WHERE name = 'indicators' "
                            "AND pagetype = 'leaf' LIMIT 1 OFFSET 3").fetchone()[0]
    conn.close()
    with open(workspace.db_path, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(os.urandom(page_size))
    for args in (("verify",), ("verify", "--json"), ("verify", "AAPL")):
        result = workspace(*args)
        assert result.code == 1, result
        line = _one_error_line(result)
        assert "is damaged" in line and str(workspace.db_path) in line, result
        assert "verified" not in result.out, result


def _start_long_run(ws: Workspace, *extra: str) -> subprocess.Popen:
    """A `run` of twelve symbols, one at a time, once its jobs exist (seconds of work left)."""
    argv = [ws.exe, *RUN, "--symbols", SYMBOLS, "--timeframes", "1d,1h", "--since", SINCE, *extra]
    proc = subprocess.Popen(argv, cwd=ws.root, env={**ws.env, "ENRICHCTL_MAX_CONCURRENT_SYMBOLS": "1"},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + CUT_TIMEOUT_S
    while "jobs" not in ws.tables() or ws.query("SELECT count(*) FROM jobs")[0][0] == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run made no jobs"
        time.sleep(0.01)
    return proc


def _finish(proc: subprocess.Popen) -> int:
    out, err = proc.communicate(timeout=CUT_TIMEOUT_S)
    print(out, err)
    return proc.returncode


def _second_run_beside_a_long_one(ws: Workspace, *args: str) -> tuple[Result, int]:
    """A `run` with ``args`` while a long first run is active: its result, and the first's code."""
    first = _start_long_run(ws)
    try:
        second = ws(*RUN, *args, "--since", SINCE)
    finally:
        first_code = _finish(first)
    return second, first_code


@pytest.mark.postgres
def test_a_second_run_with_other_symbols_adds_its_jobs_to_the_active_run(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    ws = Workspace(tmp_path, database=postgres_server.create())
    second, first_code = _second_run_beside_a_long_one(ws, "--symbols", "CSCO,INTC", "--timeframes", "1d,1h")
    assert second.code == 0 and first_code == 0, second
    assert "joined run 1" in second.out, second
    # Its symbols were fetched, as jobs of the one run, which counts them all.
    assert ws.query("SELECT symbol, status FROM jobs WHERE symbol IN ('CSCO', 'INTC') ORDER BY symbol") == [
        ("CSCO", "succeeded"), ("INTC", "succeeded")]
    assert ws.query("SELECT count(DISTINCT symbol), count(DISTINCT timeframe) FROM bars "
                    "WHERE symbol IN ('CSCO', 'INTC')") == [(2, 2)]
    assert ws.query("SELECT id, status, jobs_total, jobs_succeeded FROM runs") == [(1, "succeeded", 14, 14)]


@pytest.mark.postgres
def test_a_second_run_with_other_options_exits_75_saying_why(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    ws = Workspace(tmp_path, database=postgres_server.create())
    second, first_code = _second_run_beside_a_long_one(ws, "--symbols", "CSCO", "--timeframes", "1d")
    assert first_code == 0
    assert second.code == 75, second
    line = _one_error_line(second)
    assert "run 1 is active with other timeframes" in line, second
    assert ws.query("SELECT count(*) FROM jobs WHERE symbol = 'CSCO'") == [(0,)]
    assert ws.query("SELECT id, status FROM runs") == [(1, "succeeded")]


@pytest.mark.parametrize("how", ["directory-deleted", "file-replaced"])
def test_a_run_whose_sqlite_file_goes_away_does_not_report_success(workspace: Workspace, how: str) -> None:
    assert workspace("db", "upgrade").code == 0
    spare = workspace.root / "spare.db"
    shutil.copy(workspace.db_path, spare)
    run = _start_long_run(workspace)
    try:
        deadline = time.monotonic() + CUT_TIMEOUT_S
        while _succeeded(workspace) < 1:
            assert run.poll() is None and time.monotonic() < deadline, "no job finished in time"
            time.sleep(0.01)
        if how == "directory-deleted":
            shutil.rmtree(workspace.db_path.parent)
        else:
            os.replace(spare, workspace.db_path)
    finally:
        out, err = run.communicate(timeout=CUT_TIMEOUT_S)
    print(out, err)
    assert run.returncode == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("enrichctl: error:")]
    assert len(errors) == 1 and "was removed or replaced" in errors[0], err
    assert "run 1 succeeded" not in out, out
