"""Scale-out benchmark: 1, 2 and 4 ``enrichctl`` worker processes share one run on PostgreSQL
against the fake Polygon (``tests/integration/fake_polygon.py``) on 127.0.0.1. Printed, never
asserted:

1. **Scaling.** An unlimited server that answers every request after a simulated latency. The
   first worker starts the run (``enrichctl run``); the others join it (``run --worker``). Figures:
   bars/s over the run's duration and the speed-up against the 1-worker run of the same
   benchmark (the floor); the same once every worker has joined (the joiners' start-up, a second
   or more each on a busy machine, is part of the run's duration); the latency floor
   (requests x latency / (workers x slots)).
2. **Shared quota.** Several workers against a server allowing R requests per rolling window W
   (429 beyond), with the workers configured for R per W: the sustained rate after the first
   window, against the target of at least 0.95 R per window, the most requests the server saw in
   any window, and the 429s (target: none). The limiter's safety margin is 2 % of the window, and
   a request reaches the server milliseconds (under load, up to ~100 ms) after its admission: keep
   W at a few seconds or more, or 429s measure the machine's scheduling, not the limiter.

PostgreSQL comes from ``$ENRICHCTL_TEST_POSTGRES_URL`` or ``postgresql://postgres@127.0.0.1:5432``;
the benchmark creates its databases (``bench_workers_<random>_*``) and drops them at the end.

    python bench/bench_workers.py [--workers 1,2,4] [--symbols 80] [--latency 0.5] [--slots 2]
                                  [--rate 60] [--window 10] [--windows 3] [--repeat 1] [--json]

Exit 1 only when the benchmark itself is broken (no PostgreSQL, a worker failed, or the stored
bars are not the server's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from fake_polygon import FakePolygon

from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import MS_PER_DAY, AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

ENRICHCTL = Path(sys.executable).parent / "enrichctl"
KEY = "pk_bench_workers_4e1f"
AS_OF = "2025-06-02T12:00"
AS_OF_MS = utc_date_ms("2025-06-02") + 12 * 3_600_000
POSTGRES_URL = os.environ.get("ENRICHCTL_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
RATE_TARGET = 0.95
LEASE_S = 10
DEADLINE_S = 300.0


class Broken(Exception):
    """The benchmark itself is broken: its figures would mean nothing."""


# --- databases --------------------------------------------------------------------------------


class Databases:
    """Fresh PostgreSQL databases for the benchmark, all dropped by ``drop_all``."""

    def __init__(self, admin_url: str) -> None:
        self.admin = make_url(admin_url).set(drivername="postgresql+psycopg2")
        self.prefix = f"bench_workers_{secrets.token_hex(3)}"
        self.engine = sa.create_engine(self.admin, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                       connect_args={"connect_timeout": 3})
        self.created: list[str] = []

    def create(self, name: str) -> URL:
        db_name = f"{self.prefix}_{name}"
        with self.engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
        self.created.append(db_name)
        return self.admin.set(database=db_name)

    def drop_all(self) -> None:
        with self.engine.connect() as conn:
            for db_name in self.created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        self.engine.dispose()


@contextmanager
def databases() -> Iterator[Databases]:
    dbs = Databases(POSTGRES_URL)
    try:
        with dbs.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        where = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        raise Broken(f"PostgreSQL at {where} is unreachable ({str(exc.orig).strip().splitlines()[0]}); "
                     "set ENRICHCTL_TEST_POSTGRES_URL") from None
    try:
        yield dbs
    finally:
        dbs.drop_all()


def rows(url: URL, sql: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql)).all()]
    finally:
        engine.dispose()


async def rows_async(url: URL, sql: str) -> list[tuple]:
    """Off the event loop: it serves the fake server meanwhile."""
    return await asyncio.to_thread(rows, url, sql)


# --- workers ------------------------------------------------------------------------------------


def config_write(path: Path, fake: FakePolygon, url: URL, symbols: list[str], days: int, slots: int,
                 rate: int, window: float) -> Path:
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    universe = ",\n".join(f'  {{ symbol = "{s}", asset_class = "stock" }}' for s in symbols)
    path.write_text(
        f'database_url = "{plain}"\nprovider = "polygon"\ntimeframes = ["1d"]\n'
        f"max_concurrent_symbols = {slots}\nretry_delay_seconds = 0.2\n"
        f"worker_lease_seconds = {LEASE_S}\nuniverse = [\n{universe}\n]\n"
        f'[history_days]\n"1d" = {days + 30}\n'
        f'[polygon]\napi_key = "{KEY}"\nbase_url = "{fake.url}"\n'
        f"requests_per_minute = {rate}\nrate_window_seconds = {window}\n"
    )
    return path


def worker_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ENRICHCTL_", "XDG_")) and k not in ("DATABASE_URL", "POLYGON_API_KEY")}
    env.update(HOME=str(root), XDG_CONFIG_HOME=str(root / "config"), XDG_DATA_HOME=str(root / "data"))
    return env


async def start(config: Path, env: dict[str, str], *extra: str) -> tuple[asyncio.subprocess.Process, asyncio.Task]:
    proc = await asyncio.create_subprocess_exec(
        str(ENRICHCTL), "--config", str(config), "run", "--as-of", AS_OF, "--json", *extra,
        env=env, cwd=env["HOME"], stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    return proc, asyncio.create_task(proc.communicate())


async def run_started(url: URL) -> bool:
    try:
        found = await rows_async(url, "SELECT count(*) FROM runs r JOIN jobs j ON j.run_id = r.id "
                                      "WHERE r.status = 'running'")
    except sa.exc.ProgrammingError:  # not migrated yet
        return False
    return found[0][0] > 0


async def one_run(fake: FakePolygon, url: URL, config: Path, env: dict[str, str], workers: int) -> dict[str, Any]:
    """One ``run`` and ``workers - 1`` ``run --worker`` on a fresh database; what the run did."""
    fake.requests.clear()
    fake.rejected_429 = 0
    began = time.perf_counter()
    procs = [await start(config, env)]
    try:
        deadline = time.monotonic() + 60
        while not await run_started(url):
            if time.monotonic() > deadline or procs[0][1].done():
                raise Broken("the first worker never started its run")
            await asyncio.sleep(0.05)
        procs += [await start(config, env, "--worker") for _ in range(workers - 1)]
        outputs = [await asyncio.wait_for(task, DEADLINE_S) for _, task in procs]
    finally:
        for proc, _ in procs:
            if proc.returncode is None:
                proc.kill()
    wall = time.perf_counter() - began
    for (proc, _), (_, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise Broken(f"a worker exited {proc.returncode}: {err.decode()[-2000:]}")
    (status, started, finished, bars, requests), = await rows_async(
        url, "SELECT status, started_at, finished_at, bars_written, requests FROM runs")
    if status != "succeeded":
        raise Broken(f"the run ended {status}")
    (joined,), = await rows_async(url, "SELECT max(started_at) FROM workers")
    per_worker = await rows_async(url, "SELECT jobs_done FROM workers ORDER BY started_at")
    # Once every worker is in: the bars of the jobs that finished from then on, per second.
    (after,), = await rows_async(
        url, f"SELECT coalesce(sum(bars_written), 0) FROM jobs WHERE finished_at > {joined}")
    return {
        "workers": workers, "wall_s": round(wall, 2), "run_s": round((finished - started) / 1000, 2),
        "join_delay_s": round((joined - started) / 1000, 2) if workers > 1 else None,
        "bars": int(bars), "requests": int(requests),
        "bars_per_s": round(bars / ((finished - started) / 1000)),
        "bars_per_s_all_in": round(int(after) / max((finished - joined) / 1000, 1e-3)),
        "jobs_per_worker": [n for (n,) in per_worker],
        "stored_bars": (await rows_async(url, "SELECT count(*) FROM bars"))[0][0],
    }


# --- the two measurements -----------------------------------------------------------------------


async def hold(fake: FakePolygon, symbols: list[str], days: int) -> int:
    demo = DemoProvider(SessionCalendar(), clock=lambda: AS_OF_MS)
    held = [await fake.hold_from(demo, Series(s, AssetClass.STOCK, Timeframe.D1),
                                 AS_OF_MS - days * MS_PER_DAY, AS_OF_MS) for s in symbols]
    return sum(len(b) for b in held)


async def scaling(args: argparse.Namespace, dbs: Databases, work: Path) -> list[dict[str, Any]]:
    symbols = [f"W{i:03d}" for i in range(args.symbols)]
    env = worker_env(work)
    results = []
    async with FakePolygon(api_key=KEY) as fake:
        held = await hold(fake, symbols, args.days)
        fake.slow = args.latency
        for n in args.workers:
            best: dict[str, Any] | None = None
            for rep in range(args.repeat):
                url = dbs.create(f"scale_{n}_{rep}")
                config = config_write(work / f"scale_{n}_{rep}.toml", fake, url, symbols, args.days,
                                      args.slots, 0, 60.0)
                got = await one_run(fake, url, config, env, n)
                if got["stored_bars"] != held:
                    raise Broken(f"{n} workers stored {got['stored_bars']} bars; the server holds {held}")
                if best is None or got["run_s"] < best["run_s"]:
                    best = got
            assert best is not None
            floor = -(-len(symbols) // (n * args.slots)) * args.latency
            best["latency_floor_s"] = round(floor, 2)
            results.append(best)
    base = results[0] if results[0]["workers"] == 1 else None
    for r in results:
        r["speed_up"] = round(r["bars_per_s"] / base["bars_per_s"], 2) if base else None
        r["speed_up_all_in"] = round(r["bars_per_s_all_in"] / base["bars_per_s_all_in"], 2) if base else None
    return results


async def quota(args: argparse.Namespace, dbs: Databases, work: Path) -> dict[str, Any]:
    rate, window = args.rate, args.window
    symbols = [f"Q{i:03d}" for i in range(rate * args.windows)]
    env = worker_env(work)
    async with FakePolygon(api_key=KEY, budget=rate, window=window) as fake:
        await hold(fake, symbols, 60)
        fake.slow = args.quota_latency
        url = dbs.create("quota")
        config = config_write(work / "quota.toml", fake, url, symbols, 60, args.slots, rate, window)
        got = await one_run(fake, url, config, env, args.quota_workers)
        arrivals = sorted(r.at for r in fake.requests if r.status == 200)
        if len(arrivals) <= rate:
            raise Broken(f"only {len(arrivals)} requests answered: the quota never bound")
        # After the first window: a rolling window lets request i + R in one window after request
        # i, so R more per window is the most the contract allows, however the first window went
        # (a slow start, e.g. workers still starting up, is not the limiter's doing).
        sustained = (len(arrivals) - rate) / (arrivals[-1] - arrivals[rate - 1]) * window / rate
        return {
            **got, "rate": rate, "window_s": window, "answered": len(arrivals),
            "sustained_per_window": round(sustained * rate, 2), "sustained_ratio": round(sustained, 3),

            "max_in_any_window": fake.max_in_window(window), "responses_429": fake.rejected_429,
        }


def table(figures: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [(f"scaling    {args.symbols} stocks x 1d x {args.days} days, server latency "
              f"{args.latency} s, {args.slots} slots per worker (unlimited quota)")]
    for r in figures["scaling"]:
        joined = f"joiners in after {r['join_delay_s']:4.2f} s" if r["join_delay_s"] is not None else " " * 24
        lines.append(
            f"  {r['workers']} worker{'s' if r['workers'] > 1 else ' '}  run {r['run_s']:6.2f} s "
            f"(latency floor {r['latency_floor_s']:5.2f} s; {joined})  {r['bars']} bars: "
            f"{r['bars_per_s']:6d} bars/s = {r['speed_up']}x; once all in {r['bars_per_s_all_in']:6d} "
            f"bars/s = {r['speed_up_all_in']}x;  jobs per worker {r['jobs_per_worker']}")
    q = figures["quota"]
    ok = q["sustained_ratio"] >= RATE_TARGET and q["responses_429"] == 0
    lines += [
        (f"quota      {q['workers']} workers, R = {q['rate']} per {q['window_s']} s window, "
         f"{q['answered']} requests in {q['run_s']} s (server latency {args.quota_latency} s), "
         f"jobs per worker {q['jobs_per_worker']}"),
        (f"           sustained after the first window {q['sustained_per_window']} per window = "
         f"{q['sustained_ratio']} R (target >= {RATE_TARGET} R); most in any window "
         f"{q['max_in_any_window']}; "
         f"429 responses {q['responses_429']}  -> {'ok' if ok else 'OVER TARGET'}"),
    ]
    return "\n".join(lines)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with databases() as dbs, tempfile.TemporaryDirectory(prefix="bench_workers_") as tmp:
        work = Path(tmp)
        return {"scaling": await scaling(args, dbs, work), "quota": await quota(args, dbs, work)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare (first: the floor)")
    parser.add_argument("--symbols", type=int, default=80, help="stocks (one request each) when scaling")
    parser.add_argument("--days", type=int, default=730, help="days of 1d history per stock")
    parser.add_argument("--latency", type=float, default=0.5, help="server latency when scaling, s")
    parser.add_argument("--slots", type=int, default=2, help="max_concurrent_symbols of each worker")
    parser.add_argument("--rate", type=int, default=60, help="server budget R per window")
    parser.add_argument("--window", type=float, default=10.0, help="the budget's window, seconds")
    parser.add_argument("--windows", type=int, default=3, help="windows the quota run spans")
    parser.add_argument("--quota-workers", type=int, default=4, help="workers sharing the quota")
    parser.add_argument("--quota-latency", type=float, default=0.05, help="server latency, quota run, s")
    parser.add_argument("--repeat", type=int, default=1, help="best of K per worker count")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    args.workers = [int(n) for n in args.workers.split(",")]
    try:
        figures = asyncio.run(measure(args))
    except Broken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(figures, indent=2) if args.json else table(figures, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
