"""Scale-out with real processes: several installed ``enrichctl`` workers share one run on one
PostgreSQL against a fake Polygon with a per-window request budget (served by this test's event
loop on 127.0.0.1 while the workers run as subprocesses).

One three-worker run (module fixture ``three_workers``) answers several questions: every job done
exactly once and spread over the workers, the stored series equal the server's, the provider's
budget held across processes with zero 429s, the run closed once, and ``status --json`` shows the
workers. A second scenario kills a worker with SIGKILL while it holds jobs: the others finish
them, and the final database equals a single-worker run's. A third starts a `run` just after the
worker named on the run lease died: it must join the live run.

The budget window is 5 s, not less: the limiter admits with a margin of 2 % of the window, and on
a loaded machine a request reaches the server up to ~100 ms after its admission, so shorter
windows see occasional 429s that a 60 s window never would. With 5 s the window boundaries also
fall after the joiners' start-up, the busiest moment of the scenario.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import sqlalchemy as sa
from fake_polygon import FakePolygon

from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import BAR_FIELDS, MS_PER_DAY, AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

if TYPE_CHECKING:
    from conftest import Database, PostgresServer

pytestmark = pytest.mark.postgres

ENRICHCTL = Path(sys.executable).parent / "enrichctl"
KEY = "pk_workers_7c41d0e2b9"
AS_OF = "2025-06-02T12:00"  # Monday 08:00 New York: Friday's day bar is complete
AS_OF_MS = utc_date_ms("2025-06-02") + 12 * 3_600_000
SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "JPM", "V", "WMT", "XOM",
           "UNH", "JNJ", "PG", "HD", "KO"]
TIMEFRAMES = (Timeframe.D1, Timeframe.H1)
SERIES = [Series(s, AssetClass.STOCK, tf) for s in SYMBOLS for tf in TIMEFRAMES]
HELD_DAYS = 30  # the server holds less than a new series asks for: the whole of it is stored
HISTORY_DAYS = {"1d": 60, "1h": 40}
RATE, WINDOW = 11, 5.0  # the provider's budget, shared by every worker (3 windows of work)
LEASE_S = 3  # a dead worker's claims lapse after this
CONCURRENCY = 3
DEADLINE_S = 60.0  # one scenario; far above what it takes


# --- the fixture world ------------------------------------------------------------------------


def clean_env(root: Path) -> dict[str, str]:
    """The environment of a worker: none of the developer's enrichctl settings or secrets."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ENRICHCTL_", "XDG_"))
           and k not in ("DATABASE_URL", "POLYGON_API_KEY", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")}
    env.update(HOME=str(root), XDG_CONFIG_HOME=str(root / "config"), XDG_DATA_HOME=str(root / "data"))
    return env


def config_write(path: Path, fake_url: str, database_url: str, rate: int,
                 lease_s: float = LEASE_S) -> Path:
    """The TOML every worker of a scenario reads (``rate`` 0: unlimited)."""
    universe = ",\n".join(f'  {{ symbol = "{s}", asset_class = "stock" }}' for s in SYMBOLS)
    path.write_text(
        f'database_url = "{database_url}"\n'
        'provider = "polygon"\n'
        f"timeframes = {json.dumps([tf.value for tf in TIMEFRAMES])}\n"
        f"max_concurrent_symbols = {CONCURRENCY}\n"
        "retry_delay_seconds = 0.2\n"
        f"worker_lease_seconds = {lease_s}\n"
        f"universe = [\n{universe}\n]\n"
        "[history_days]\n" + "".join(f'"{tf}" = {d}\n' for tf, d in HISTORY_DAYS.items())
        + "[polygon]\n"
        f'api_key = "{KEY}"\nbase_url = "{fake_url}"\n'
        f"requests_per_minute = {rate}\nrate_window_seconds = {WINDOW}\n"
    )
    return path


async def serve_market(fake: FakePolygon) -> None:
    """The server holds HELD_DAYS of every series up to the pinned market time."""
    demo = DemoProvider(SessionCalendar(), clock=lambda: AS_OF_MS)
    for series in SERIES:
        await fake.hold_from(demo, series, AS_OF_MS - HELD_DAYS * MS_PER_DAY, AS_OF_MS)


@dataclass
class Worker:
    """One ``enrichctl run`` process; ``finished`` resolves to (exit code, stdout, stderr)."""

    proc: asyncio.subprocess.Process
    finished: asyncio.Task[tuple[bytes, bytes]]
    args: tuple[str, ...]
    code: int | None = None
    out: str = ""
    err: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait(self) -> Worker:
        out, err = await asyncio.wait_for(self.finished, DEADLINE_S)
        self.code, self.out, self.err = self.proc.returncode, out.decode(), err.decode()
        print(f"$ enrichctl {' '.join(self.args)}  (pid {self.pid}) -> exit {self.code}\n"
              f"--- stderr\n{self.err}--- end")
        return self

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of this event."""
        docs = [json.loads(line) for line in self.err.splitlines() if line.startswith("{")]
        return [d for d in docs if d.get("event") == name]

    def report(self) -> dict[str, Any]:
        return json.loads(self.out)


async def enrichctl(config: Path, env: dict[str, str], *args: str) -> Worker:
    """Start the installed CLI; its pipes are drained at once so it never blocks on them."""
    argv = ("--config", str(config), "--log-format", "json", *args)
    proc = await asyncio.create_subprocess_exec(
        str(ENRICHCTL), *argv, env=env, cwd=env["HOME"], stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    return Worker(proc, asyncio.create_task(proc.communicate()), argv)


async def run_worker(config: Path, env: dict[str, str], *extra: str) -> Worker:
    return await enrichctl(config, env, "run", "--as-of", AS_OF, "--json", *extra)


async def status_json(config: Path, env: dict[str, str]) -> dict[str, Any]:
    status = await (await enrichctl(config, env, "status", "--json")).wait()
    assert status.code == 0, status.err
    return json.loads(status.out)


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Poll ``check`` (every 50 ms) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def query(db: Database, sql: str, **params: Any) -> Awaitable[list[tuple]]:
    """Read the database through psycopg2 off the event loop (it keeps serving the fake)."""
    return asyncio.to_thread(db.rows, sql, **params)


async def run_started(db: Database) -> bool:
    """True once a run is going and its jobs exist (joining before that finds nothing to join)."""
    try:
        rows = await query(db, "SELECT count(*) FROM runs r JOIN jobs j ON j.run_id = r.id "
                               "WHERE r.status = 'running'")
    except sa.exc.ProgrammingError:  # no tables until the first worker has migrated the database
        return False
    return rows[0][0] > 0


async def kill_all(workers: list[Worker]) -> None:
    """A failed scenario leaves no process behind."""
    for w in workers:
        if w.proc.returncode is None:
            w.proc.kill()
    for w in workers:
        if not w.finished.done():
            await asyncio.gather(w.finished, return_exceptions=True)


# --- scenario 1: three workers share one run ------------------------------------------------


@dataclass
class ThreeWorkers:
    db: Database
    fake: FakePolygon
    workers: list[Worker]
    status_during: dict[str, Any]
    status_after: dict[str, Any]
    plan_end: dict[Series, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def three_workers(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ThreeWorkers]:
    """One `run`, then (once its run is going) a second `run` and a `run --worker` join it."""
    root = tmp_path_factory.mktemp("three_workers")
    db = postgres_server.database("workers_three")
    try:
        yield asyncio.run(_three_workers(db, root))
    finally:
        db.close()


async def _three_workers(db: Database, root: Path) -> ThreeWorkers:
    env = clean_env(root)
    async with FakePolygon(api_key=KEY, budget=RATE, window=WINDOW) as fake:
        await serve_market(fake)
        config = config_write(root / "enrichctl.toml", fake.url, db.url, RATE)
        workers = [await run_worker(config, env)]
        try:
            await until("the first worker's run", lambda: run_started(db))
            workers += [await run_worker(config, env), await run_worker(config, env, "--worker")]
            await until("three registered workers", lambda: _count(db, "workers", 3))
            during = await status_json(config, env)
            for w in workers:
                await w.wait()
        finally:
            await kill_all(workers)
        after = await status_json(config, env)
    plan = workers[0].report()["plan"]["tasks"]
    ends = {Series(t["symbol"], AssetClass.STOCK, Timeframe(t["timeframe"])): _iso_ms(t["to"])
            for t in plan}
    return ThreeWorkers(db, fake, workers, during, after, ends)


async def _count(db: Database, table: str, n: int) -> bool:
    return (await query(db, f"SELECT count(*) FROM {table}"))[0][0] >= n


def _series_of(path: str) -> tuple[str, str, str]:
    """(ticker, multiplier, timespan) of ``/v2/aggs/ticker/{t}/range/{m}/{span}/{from}/{to}``."""
    parts = path.split("/")
    return parts[4], parts[6], parts[7]


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_three_workers_do_every_job_exactly_once_between_them(three_workers: ThreeWorkers) -> None:
    db, workers = three_workers.db, three_workers.workers
    assert [w.code for w in workers] == [0, 0, 0]
    jobs = db.rows("SELECT symbol, status, attempts, claimed_by FROM jobs ORDER BY symbol")
    assert sorted(s for s, *_ in jobs) == sorted(SYMBOLS)  # one job per symbol
    assert {(status, attempts) for _, status, attempts, _ in jobs} == {("succeeded", 1)}
    holders = Counter(by for *_, by in jobs)
    assert len(holders) > 1, f"one worker did every job: {holders}"
    assert db.scalar("SELECT count(*) FROM workers") == 3
    # Each series was fetched by one task, with one request: nothing was done twice.
    tasks = db.rows("SELECT symbol, timeframe, status FROM tasks")
    assert sorted(tasks) == sorted((s.symbol, s.timeframe.value, "succeeded") for s in SERIES)
    fetched = Counter(_series_of(path) for path in three_workers.fake.paths())
    assert len(fetched) == len(SERIES) and set(fetched.values()) == {1}, fetched


def test_three_workers_store_exactly_the_servers_bars(three_workers: ThreeWorkers) -> None:
    db, fake = three_workers.db, three_workers.fake
    total = 0
    for series in SERIES:
        held = fake.held(series)
        want = held.take(held.ts <= three_workers.plan_end[series])
        got = db.bars(series)
        assert len(want) > 0 and len(got) == len(want), series
        for name in BAR_FIELDS:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name),
                                          err_msg=f"{series} {name}")
        total += len(want)
    assert db.scalar("SELECT count(*) FROM bars") == total  # and nothing else, twice or otherwise


def test_three_workers_stay_within_the_shared_request_budget(three_workers: ThreeWorkers) -> None:
    fake = three_workers.fake
    statuses = Counter(r.status for r in fake.requests if r.path.startswith("/v2/aggs"))
    assert fake.rejected_429 == 0 and statuses == {200: len(SERIES)}, statuses
    # Besides the bars, only reference data: each worker's splits check, the weekly dividends.
    others = [r for r in fake.requests if not r.path.startswith("/v2/aggs")]
    assert all(r.path.startswith("/v3/reference/") and r.status == 200 for r in others), others
    assert len(others) <= 2 * len(three_workers.workers), others
    assert fake.max_in_window(WINDOW) <= RATE
    # The budget was what paced the run: it took several windows, not one burst.
    arrivals = sorted(r.at for r in fake.requests)
    assert arrivals[-1] - arrivals[0] >= (len(SERIES) / RATE - 1) * WINDOW


def test_three_workers_close_the_run_once_as_succeeded(three_workers: ThreeWorkers) -> None:
    db, workers = three_workers.db, three_workers.workers
    runs = db.dicts("SELECT status, jobs_total, jobs_succeeded, jobs_failed, finished_at FROM runs")
    assert len(runs) == 1
    assert runs[0]["status"] == "succeeded" and runs[0]["finished_at"] is not None
    counts = (runs[0]["jobs_total"], runs[0]["jobs_succeeded"], runs[0]["jobs_failed"])
    assert counts == (len(SYMBOLS), len(SYMBOLS), 0)
    closes = [e for w in workers for e in w.events("enrichment_run_finished")]
    assert len(closes) == 1 and closes[0]["status"] == "succeeded", closes
    assert db.scalar("SELECT count(*) FROM leases") == 0  # the next run starts at once
    # Every worker's summary names the same run and its final outcome.
    reports = [w.report() for w in workers]
    assert [(r["run_id"], r["status"]) for r in reports] == [(1, "succeeded")] * 3


def test_status_json_shows_each_worker_with_host_pid_jobs_and_heartbeat(
    three_workers: ThreeWorkers,
) -> None:
    pids = sorted(w.pid for w in three_workers.workers)
    during = three_workers.status_during["workers"]
    assert sorted(w["pid"] for w in during) == pids
    assert all(w["host"] == socket.gethostname() and w["last_heartbeat"] for w in during)
    # Taken while the run went on; on a loaded machine `status` may start only as workers end,
    # so each worker is active exactly when it has not finished.
    assert all(w["active"] == (w["finished_at"] is None) for w in during), during
    after = three_workers.status_after["workers"]
    assert sorted(w["pid"] for w in after) == pids
    assert not any(w["active"] for w in after) and all(w["finished_at"] for w in after)
    done_by = Counter(by for (by,) in three_workers.db.rows("SELECT claimed_by FROM jobs"))
    assert {w["worker"]: w["jobs_done"] for w in after if w["jobs_done"]} == dict(done_by)
    assert sum(w["jobs_done"] for w in after) == len(SYMBOLS)


# --- scenario 2: a worker is killed mid-run ---------------------------------------------------


async def worker_id_of(db: Database, pid: int) -> str:
    rows = await until(f"the worker row of pid {pid}",
                       lambda: query(db, "SELECT id FROM workers WHERE pid = :p", p=pid))
    return rows[0][0]


async def held_jobs(db: Database, worker: str) -> list[str]:
    rows = await query(db, "SELECT symbol FROM jobs WHERE claimed_by = :w "
                           "AND status IN ('running', 'retrying') ORDER BY symbol", w=worker)
    return [s for (s,) in rows]


def dump(db: Database) -> dict[str, list[tuple]]:
    """What a user reads back: bars, series watermarks and counts, quality findings."""
    return {
        "bars": db.table("bars", "symbol, timeframe, ts"),
        "series": db.rows(
            "SELECT symbol, timeframe, asset_class, provider, synthetic, watermark, first_ts, "
            "requested_from, bar_count, indicator_set, quality_score, issue_count, last_error "
            "FROM series ORDER BY symbol, timeframe"),
        "quality_issues": db.rows(
            "SELECT symbol, timeframe, kind, severity, ts, detail FROM quality_issues "
            "ORDER BY symbol, timeframe, kind, ts, detail"),
    }


@dataclass
class KilledWorker:
    shared: Database  # where three workers ran and one was killed
    single: Database  # where one worker ran alone
    fake: FakePolygon
    victim: Worker
    survivors: list[Worker]
    orphans: list[str]  # the jobs the victim held when it died
    ids: dict[int, str]  # pid -> worker id
    status_after: dict[str, Any]


@pytest.fixture(scope="module")
def killed_worker(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[KilledWorker]:
    """`run` and two `run --worker`; the first gets SIGKILL while it holds jobs. Then one
    worker alone fills a second database from the same server."""
    root = tmp_path_factory.mktemp("killed_worker")
    shared = postgres_server.database("workers_kill")
    single = postgres_server.database("workers_single")
    try:
        yield asyncio.run(_killed_worker(shared, single, root))
    finally:
        shared.close()
        single.close()


async def _killed_worker(shared: Database, single: Database, root: Path) -> KilledWorker:
    env = clean_env(root)
    async with FakePolygon(api_key=KEY, budget=RATE, window=WINDOW) as fake:
        await serve_market(fake)
        config = config_write(root / "shared.toml", fake.url, shared.url, RATE)
        victim = await run_worker(config, env)
        workers = [victim]
        try:
            await until("the first worker's run", lambda: run_started(shared))
            workers += [await run_worker(config, env, "--worker"), await run_worker(config, env, "--worker")]
            await until("three registered workers", lambda: _count(shared, "workers", 3))
            ids = {w.pid: await worker_id_of(shared, w.pid) for w in workers}
            await until("the victim holding jobs", lambda: held_jobs(shared, ids[victim.pid]))
            victim.proc.send_signal(signal.SIGKILL)
            await victim.wait()
            orphans = await held_jobs(shared, ids[victim.pid])  # what it held when it died
            print(f"killed pid {victim.pid} holding {orphans}")
            for w in workers[1:]:
                await w.wait()
        finally:
            await kill_all(workers)
        after = await status_json(config, env)
        fake.budget = 0  # the reference run: one worker, nothing to share
        reference = await run_worker(config_write(root / "single.toml", fake.url, single.url, 0), env)
        assert (await reference.wait()).code == 0
    return KilledWorker(shared, single, fake, victim, workers[1:], orphans, ids, after)


def test_a_killed_workers_jobs_are_finished_by_the_others(killed_worker: KilledWorker) -> None:
    k = killed_worker
    assert k.victim.code == -signal.SIGKILL and k.orphans
    assert [w.code for w in k.survivors] == [0, 0]
    assert k.shared.rows("SELECT status, jobs_succeeded FROM runs") == [("succeeded", len(SYMBOLS))]
    jobs = {s: (status, attempts, by) for s, status, attempts, by in
            k.shared.rows("SELECT symbol, status, attempts, claimed_by FROM jobs")}
    assert len(jobs) == len(SYMBOLS) and {status for status, _, _ in jobs.values()} == {"succeeded"}
    survivors = {k.ids[w.pid] for w in k.survivors}
    for symbol in k.orphans:  # taken over once the victim's claim lapsed: a second attempt
        assert jobs[symbol][1] == 2 and jobs[symbol][2] in survivors, (symbol, jobs[symbol])


def test_after_a_killed_worker_the_database_equals_a_single_workers(killed_worker: KilledWorker) -> None:
    shared, single = killed_worker.shared, killed_worker.single
    mine, theirs = dump(shared), dump(single)
    assert len(mine["bars"]) > 0
    for table in mine:
        assert mine[table] == theirs[table], f"{table} differs from a single worker's"
    for series in SERIES:
        shared.assert_same_series(single, series)  # indicators within 1e-9 relative


def test_status_after_the_run_shows_the_killed_worker_as_not_active(killed_worker: KilledWorker) -> None:
    workers = {w["pid"]: w for w in killed_worker.status_after["workers"]}
    assert set(workers) == set(killed_worker.ids)
    for w in killed_worker.survivors:
        assert workers[w.pid]["finished_at"] and not workers[w.pid]["active"]
    dead = workers[killed_worker.victim.pid]
    assert dead["heartbeat_age_s"] > LEASE_S
    assert not dead["active"], f"a worker killed long ago is listed as active: {dead}"


# --- scenario 3: a new `run` right after the lease's last renewer died ----------------------


async def test_a_run_started_after_the_lease_holder_died_joins_the_live_workers(
    postgres_server: PostgresServer, tmp_path: Path,
) -> None:
    """The run lease names whichever worker renewed it last. When that one dies, the run lives
    on in the others: a `run` started then (the next timer tick) must join it, not abandon it."""
    db = postgres_server.database("workers_lease")
    env = clean_env(tmp_path)
    async with FakePolygon(api_key=KEY, budget=RATE, window=WINDOW) as fake:
        await serve_market(fake)
        # A long lease: nobody renews it for 10 s, so it still names the first worker.
        config = config_write(tmp_path / "enrichctl.toml", fake.url, db.url, RATE, lease_s=30)
        first = await run_worker(config, env)
        workers = [first]
        try:
            await until("the first worker's run", lambda: run_started(db))
            workers.append(await run_worker(config, env, "--worker"))
            await until("two registered workers", lambda: _count(db, "workers", 2))
            first.proc.send_signal(signal.SIGKILL)
            await first.wait()
            workers.append(late := await run_worker(config, env))
            rows = await until("the late worker's decision", lambda: query(
                db, "SELECT run_id FROM workers WHERE pid = :p", p=late.pid))
            runs = await query(db, "SELECT id, status FROM runs ORDER BY id")
        finally:
            await kill_all(workers)
            db.close()
    assert runs == [(1, "running")], f"the live run was abandoned: {runs}"
    assert rows == [(1,)]
