"""A run killed at any moment, then run again, leaves exactly the database of a run that was
never interrupted; a stopped run (SIGTERM, Ctrl-C) exits within seconds, keeps what it finished
and is marked ``cancelled``.

The installed ``enrichctl`` runs as a real process on the demo provider with the market time
pinned, so every run of the same command must store the same bars and indicators.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from .workspace import AS_OF, Workspace

SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "JPM", "KO", "XOM", "X:BTCUSD",
           "X:ETHUSD", "C:EURUSD")
RUN = ("run", "--provider", "demo", "--symbols", ",".join(SYMBOLS), "--since", "2018-01-01",
       "--as-of", AS_OF)
# What a user compares after a crash: the data and what the series rows say about it (not the
# wall-clock bookkeeping such as last_attempt_at).
SERIES_COLUMNS = ("symbol, timeframe, asset_class, provider, synthetic, watermark, first_ts, "
                  "bar_count, indicator_set, issue_count")
TABLES = {
    "bars": "SELECT * FROM bars ORDER BY symbol, timeframe, ts",
    "indicators": "SELECT * FROM indicators ORDER BY symbol, timeframe, ts",
    "series": f"SELECT {SERIES_COLUMNS} FROM series ORDER BY symbol, timeframe",
}
POLL_S = 0.003
# Two jobs at a time: jobs finish one by one rather than in bursts of five, so a second process
# polling the database sees every intermediate state and can stop the run there.
ENV = {"ENRICHCTL_MAX_CONCURRENT_SYMBOLS": "2"}


def _read(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute(sql).fetchall()


def _dump(db: Path) -> dict[str, list[tuple]]:
    return {name: _read(db, sql) for name, sql in TABLES.items()}


def _assert_same_data(got: dict[str, list[tuple]], want: dict[str, list[tuple]]) -> None:
    """Table by table; on a difference, name the first differing row (not 30 000 of them)."""
    for table, rows in want.items():
        have = got[table]
        if have == rows:
            continue
        first = next((i for i, (a, b) in enumerate(zip(have, rows, strict=False)) if a != b),
                     min(len(have), len(rows)))
        pytest.fail(
            f"{table}: {len(have)} rows against {len(rows)} of an uninterrupted run; first "
            f"difference at row {first}: {have[first] if first < len(have) else None!r} "
            f"!= {rows[first] if first < len(rows) else None!r}"
        )


@dataclass(frozen=True)
class Progress:
    """What a second process can see of a run in progress."""

    run_status: str | None
    jobs_total: int
    jobs_succeeded: int


def _progress(db: Path) -> Progress | None:
    """The newest run's progress; None while there is no database or schema yet."""
    if not db.exists():
        return None
    try:
        run = _read(db, "SELECT id, status FROM runs ORDER BY id DESC LIMIT 1")
        if not run:
            return Progress(None, 0, 0)
        counts = _read(db, f"SELECT COUNT(*), COALESCE(SUM(status = 'succeeded'), 0) FROM jobs "
                           f"WHERE run_id = {int(run[0][0])}")
    except sqlite3.Error:  # no schema yet, or busy for a moment
        return Progress(None, 0, 0) if db.exists() else None
    return Progress(run[0][1], counts[0][0], counts[0][1])


def _start(ws: Workspace, *args: str) -> subprocess.Popen[bytes]:
    """``enrichctl ARGS`` in the background, its output to files nobody has to drain."""
    out = (ws.root / "run.out").open("ab")
    err = (ws.root / "run.err").open("ab")
    with out, err:
        return subprocess.Popen([ws.exe, *args], cwd=ws.root, env=ws.env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)


def _wait_for(ws: Workspace, proc: subprocess.Popen[bytes], point: str,
              reached: Callable[[bool, Progress | None], bool], timeout: float = 60) -> None:
    """Poll the database until ``reached(db file exists, progress)``; fail when the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exists = ws.db_path.exists()
        if reached(exists, _progress(ws.db_path) if exists else None):
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {point}: "
                        f"{(ws.root / 'run.err').read_text()[-2000:]}")
        time.sleep(POLL_S)
    proc.kill()
    pytest.fail(f"{point} not reached within {timeout} s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    """The database of the same run never interrupted."""
    ws = Workspace(tmp_path_factory.mktemp("uninterrupted"), env=ENV)
    result = ws(*RUN)
    assert result.code == 0, result
    dump = _dump(ws.db_path)
    assert len(dump["series"]) == len(SYMBOLS) and len(dump["bars"]) > 10_000
    return dump


def _half(total: int) -> int:
    return max(total // 3, 1)


KILL_POINTS: dict[str, Callable[[bool, Progress | None], bool]] = {
    "while the database is created": lambda exists, _p: exists,
    "after planning, before any job finished": lambda _e, p: (
        p is not None and p.run_status == "running" and p.jobs_total > 0 and p.jobs_succeeded == 0),
    "with a few jobs done": lambda _e, p: (
        p is not None and p.run_status == "running" and 1 <= p.jobs_succeeded <= _half(p.jobs_total)),
    "with most jobs done": lambda _e, p: (
        p is not None and p.run_status == "running" and p.jobs_total - 3 <= p.jobs_succeeded < p.jobs_total),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_run_again_gives_the_database_of_an_uninterrupted_run(
    tmp_path: Path, uninterrupted: dict[str, list[tuple]], point: str
) -> None:
    ws = Workspace(tmp_path, env=ENV)
    proc = _start(ws, *RUN)
    _wait_for(ws, proc, point, KILL_POINTS[point])
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    # At once, not after the lease's 60 s (a live lease would exit 75): its holder's process is gone.
    again = ws(*RUN)
    assert again.code == 0, again

    _assert_same_data(_dump(ws.db_path), uninterrupted)
    runs = ws.query("SELECT status FROM runs ORDER BY id")
    assert runs[-1] == ("succeeded",)
    assert set(runs[:-1]) <= {("abandoned",)}, f"the killed run is left as {runs[:-1]}"
    assert ws.query("SELECT COUNT(*) FROM leases") == [(0,)]
    assert ws.query("SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running', 'retrying')") == [(0,)]
    # the series rows tell the truth about what is stored: no gap, no duplicate
    assert ws.query(
        "SELECT s.symbol FROM series s WHERE s.bar_count != (SELECT COUNT(*) FROM bars b "
        "WHERE b.symbol = s.symbol AND b.timeframe = s.timeframe) OR s.watermark != (SELECT MAX(ts) "
        "FROM bars b WHERE b.symbol = s.symbol AND b.timeframe = s.timeframe)") == []


@pytest.mark.parametrize(
    ("stop", "exit_code", "message"),
    # Ctrl-C ends quietly (typer turns KeyboardInterrupt into exit 130); the log still says why.
    [(signal.SIGTERM, 143, "error: stopped by a signal"), (signal.SIGINT, 130, "status=cancelled")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_stopped_run_exits_promptly_keeps_its_finished_work_and_the_next_run_completes_it(
    tmp_path: Path, uninterrupted: dict[str, list[tuple]], stop: signal.Signals, exit_code: int,
    message: str,
) -> None:
    ws = Workspace(tmp_path, env=ENV)
    proc = _start(ws, *RUN)
    _wait_for(ws, proc, "a few jobs done", KILL_POINTS["with a few jobs done"])
    stopped_at = time.monotonic()
    proc.send_signal(stop)
    try:
        code = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 15 s after {stop.name}")
    assert time.monotonic() - stopped_at < 5, "a stop must finish well inside systemd's 90 s"
    assert code == exit_code, (ws.root / "run.err").read_text()[-2000:]
    assert message in (ws.root / "run.err").read_text()

    [(run_id, status)] = ws.query("SELECT id, status FROM runs")
    assert status == "cancelled"
    assert ws.query("SELECT COUNT(*) FROM leases") == [(0,)], "the lease was not released"
    jobs = dict(ws.query("SELECT symbol, status FROM jobs WHERE run_id = ?", (run_id,)))
    assert set(jobs.values()) <= {"succeeded", "cancelled"}, jobs
    finished = {s for s, state in jobs.items() if state == "succeeded"}
    assert finished and finished != set(SYMBOLS)
    # every finished job's series is complete: same watermark and bar count as the full run
    want = {row[0]: row for row in uninterrupted["series"]}
    for row in _dump(ws.db_path)["series"]:
        if row[0] in finished:
            assert row == want[row[0]], f"{row[0]}: finished, but stored {row} not {want[row[0]]}"

    again = ws(*RUN)
    assert again.code == 0, again
    _assert_same_data(_dump(ws.db_path), uninterrupted)
    assert [s for (s,) in ws.query("SELECT status FROM runs ORDER BY id")] == ["cancelled", "succeeded"]
