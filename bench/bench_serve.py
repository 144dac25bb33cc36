"""``serve`` under load: p50/p99 latency of the dashboard documents on a large database.

Builds a SQLite database through ``Store.open`` (the real schema), then fills it with raw
``sqlite3`` inserts: N symbols x 1h bars (default 100 x 10,000 = 1,000,000 bars), R runs x N
jobs (default 1,000 x 100 = 100,000 jobs) with one task each, 30 days of provider requests and
some quality issues. Serves it from a separate process (``web.serve_main`` on 127.0.0.1) and
measures, per endpoint, one client in sequence (the service time) and C concurrent clients
(default 50) in a closed loop. Target: p99 under 25 ms with 50 clients. Timings are printed,
never asserted (the machine is shared and noisy).

    python bench/bench_serve.py [--symbols 100] [--bars 10000] [--runs 1000] [--clients 50]
                                [--requests 20] [--keep DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

API = "/api/v1/enrichment"
TARGET_P99_MS = 25.0
HOUR_MS = 3_600_000
RUN_EVERY_MS = 3 * HOUR_MS
REQUESTS_RETENTION_MS = 30 * 24 * HOUR_MS
FOREIGN_ENV = ("DATABASE_URL", "POLYGON_API_KEY", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")

SERVER = """
import asyncio, sys
from enrichctl.logs import logging_setup
from enrichctl.settings import settings_load
from enrichctl.web.server import serve_main
logging_setup("text", "WARNING")
asyncio.run(serve_main(settings_load(), "127.0.0.1", int(sys.argv[1])))
"""


@dataclass(frozen=True, slots=True)
class Latency:
    endpoint: str
    clients: int  # 0: the document built in-process through Session, no HTTP, no shared builds
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    per_second: float
    server_cpu_ms: float | None = None  # server CPU per request (user + system)


def symbols_of(n: int) -> list[str]:
    return [f"S{i:03d}" for i in range(n)]


def config_write(directory: Path, db: Path, symbols: list[str]) -> Path:
    universe = ", ".join(f'{{ symbol = "{s}" }}' for s in symbols)
    path = directory / "enrichctl.toml"
    path.write_text(f'database_url = "sqlite:///{db}"\nprovider = "demo"\n'
                    f'timeframes = ["1h"]\nuniverse = [{universe}]\n')
    return path


def schema_create(config: Path) -> None:
    """The real schema and migrations, through the store itself."""
    code = ("import asyncio\nfrom enrichctl import service\nfrom enrichctl.settings import settings_load\n"
            "async def main():\n    async with service.session_open(settings_load()):\n        pass\n"
            "asyncio.run(main())\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(config))


def _insert(conn: sqlite3.Connection, table: str, rows: list[dict]) -> None:
    """executemany of ``rows``; NOT NULL columns the benchmark does not know get 0 (the schema
    may have grown since this was written)."""
    if not rows:
        return
    info = conn.execute(f"PRAGMA table_info({table})").fetchall()
    known = set(rows[0])
    extra = {name: 0 for _cid, name, _type, notnull, default, pk in info
             if notnull and default is None and not pk and name not in known}
    columns = [*rows[0], *extra]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    conn.executemany(sql, ([*r.values(), *extra.values()] for r in rows))


def data_fill(db: Path, symbols: list[str], bars_per_series: int, n_runs: int, now: int) -> dict[str, int]:
    rng = random.Random(7)
    last_bar = (now // HOUR_MS - 1) * HOUR_MS
    first_bar = last_bar - (bars_per_series - 1) * HOUR_MS
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        for symbol in symbols:
            price = 100.0
            rows = []
            for i in range(bars_per_series):
                price *= 1 + rng.gauss(0, 0.002)
                rows.append((symbol, "1h", first_bar + i * HOUR_MS, price, price * 1.001,
                             price * 0.999, price, 1e5, price, 100))
            conn.executemany("INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, "
                             "volume, vwap, trades) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        _insert(conn, "series", [
            {"symbol": s, "timeframe": "1h", "asset_class": "stock", "provider": "demo",
             "synthetic": 1, "watermark": last_bar, "first_ts": first_bar,
             "bar_count": bars_per_series, "quality_score": 0.99, "issue_count": 3,
             "last_attempt_at": now - HOUR_MS, "last_success_at": now - HOUR_MS,
             "last_checked_at": now - HOUR_MS, "updated_at": now - HOUR_MS}
            for s in symbols])
        runs, jobs, tasks, requests, issues = [], [], [], [], []
        job_id = 0
        for r in range(1, n_runs + 1):
            started = now - (n_runs - r + 1) * RUN_EVERY_MS
            finished = started + 60_000
            runs.append({"id": r, "trigger": "timer", "status": "succeeded", "provider": "demo",
                         "synthetic": 1, "host": "bench", "pid": 1, "started_at": started,
                         "finished_at": finished, "options": "{}", "jobs_total": len(symbols),
                         "jobs_succeeded": len(symbols), "jobs_failed": 0,
                         "bars_fetched": len(symbols) * 3, "bars_written": len(symbols),
                         "requests": len(symbols), "error": None, "resilience": None})
            for s in symbols:
                job_id += 1
                duration = rng.uniform(20, 400)
                jobs.append({"id": job_id, "run_id": r, "symbol": s, "asset_class": "stock",
                             "status": "succeeded", "attempts": 1, "started_at": started,
                             "finished_at": finished, "duration_ms": duration, "bars_fetched": 3,
                             "bars_written": 1, "error": None, "updated_at": finished})
                tasks.append({"job_id": job_id, "run_id": r, "symbol": s, "timeframe": "1h",
                              "status": "succeeded", "attempt": 1, "full_refresh": 0,
                              "bars_fetched": 3, "bars_written": 1, "indicator_values": 11,
                              "fetch_ms": duration / 2, "compute_ms": 0.2, "compute_ok": 1,
                              "started_at": started, "finished_at": finished})
                if now - started < REQUESTS_RETENTION_MS:
                    requests.append({"run_id": r, "provider": "polygon", "symbol": s,
                                     "timeframe": "1h", "endpoint": "aggs", "status": 200, "ok": 1,
                                     "latency_ms": rng.lognormvariate(5, 0.6), "attempt": 1,
                                     "bars": 3, "at": started + 1000})
            issues += [{"run_id": r, "symbol": rng.choice(symbols), "timeframe": "1h",
                        "kind": "volume_anomaly", "severity": "warning", "ts": started,
                        "detail": "volume 25x the median", "created_at": finished}
                       for _ in range(5)]
        runs[-1]["resilience"] = json.dumps({
            "at": now / 1000, "circuit_breakers": {"polygon": {"state": "closed", "times_opened": 0}},
            "rate_limiters": {"polygon": {"tokens": 5, "paused_for": 0.0}},
            "retry_policies": {}, "bulkheads": {}})
        for table, rows in (("runs", runs), ("jobs", jobs), ("tasks", tasks),
                            ("requests", requests), ("quality_issues", issues)):
            _insert(conn, table, rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("bars", "jobs", "runs", "tasks", "requests")}
    conn.execute("ANALYZE")
    conn.close()
    return counts


def _env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHCTL_") and k not in FOREIGN_ENV}
    env["ENRICHCTL_CONFIG"] = str(config)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(http: aiohttp.ClientSession, base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            async with http.get(f"{base}{API}/dashboard/overview") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the server did not start within 60 s")


async def _load(http: aiohttp.ClientSession, base: str, paths: list[str], clients: int,
                per_client: int) -> tuple[list[float], float]:
    """``clients`` workers, each sending ``per_client`` requests back to back (a closed loop)."""
    latencies: list[float] = []

    async def worker(offset: int) -> None:
        for i in range(per_client):
            path = paths[(offset + i) % len(paths)]
            began = time.perf_counter()
            async with http.get(base + path) as response:
                await response.read()
                if response.status not in (200, 503):
                    raise SystemExit(f"GET {path} answered {response.status}")
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(clients)))
    return latencies, time.perf_counter() - began


def _figures(endpoint: str, clients: int, latencies: list[float], seconds: float,
             cpu_seconds: float | None = None) -> Latency:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    cpu = round(cpu_seconds * 1000 / len(ordered), 3) if cpu_seconds is not None else None
    return Latency(endpoint, clients, len(ordered), round(statistics.median(ordered), 2),
                   round(p99, 2), round(ordered[-1], 2), round(len(ordered) / seconds, 1), cpu)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def documents_time(config: Path, symbols: list[str], repeat: int) -> list[Latency]:
    """Each document built in a child process straight through ``Session``: what a request
    costs when no shared build can answer it."""
    code = f"""
import asyncio, json, time
from enrichctl import service
from enrichctl.settings import settings_load
async def main():
    symbols = {symbols!r}
    async with service.session_open(settings_load()) as session:
        builds = {{"overview": lambda i: session.overview(), "health": lambda i: session.health(),
                  "metrics": lambda i: session.metrics(),
                  "job-status": lambda i: session.job_status(symbols[i % len(symbols)])}}
        out = {{}}
        for name, build in builds.items():
            await build(0)
            times = []
            for i in range({repeat}):
                began = time.perf_counter()
                await build(i)
                times.append((time.perf_counter() - began) * 1000)
            out[name] = times
    print(json.dumps(out))
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          env=_env(config))
    times = json.loads(done.stdout)
    return [_figures(name, 0, values, sum(values) / 1000) for name, values in times.items()]


async def measure(base: str, server_pid: int, symbols: list[str], clients: int,
                  per_client: int) -> list[Latency]:
    endpoints = {
        "overview": [f"{API}/dashboard/overview"],
        "health": [f"{API}/dashboard/health"],
        "metrics": [f"{API}/dashboard/metrics"],
        "job-status": [f"{API}/dashboard/job-status/{s}" for s in symbols],
    }
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    results = []
    async with aiohttp.ClientSession(connector=connector) as http:
        for name, paths in endpoints.items():
            await _load(http, base, paths, 1, 10)  # warm-up
            for n_clients, n_requests in ((1, 50), (clients, per_client)):
                cpu_before = _cpu_seconds(server_pid)
                latencies, seconds = await _load(http, base, paths, n_clients, n_requests)
                results.append(_figures(name, n_clients, latencies, seconds,
                                        _cpu_seconds(server_pid) - cpu_before))
    return results


async def _served_measure(base: str, server: subprocess.Popen, symbols: list[str],
                          args: argparse.Namespace) -> list[Latency]:
    async with aiohttp.ClientSession() as http:
        await _wait_listening(http, base, server)
    return await measure(base, server.pid, symbols, args.clients, args.requests)


def bench(args: argparse.Namespace, directory: Path) -> dict:
    db = directory / "enrichctl.db"
    symbols = symbols_of(args.symbols)
    config = config_write(directory, db, symbols)
    began = time.perf_counter()
    schema_create(config)
    counts = data_fill(db, symbols, args.bars, args.runs, int(time.time() * 1000))
    fill_s = time.perf_counter() - began
    results = documents_time(config, symbols, 30)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=_env(config))
    try:
        results += asyncio.run(_served_measure(f"http://127.0.0.1:{port}", server, symbols, args))
    finally:
        server.terminate()
        server.wait(30)
    return {"rows": counts, "fill_s": round(fill_s, 1), "target_p99_ms": TARGET_P99_MS,
            "latency": [asdict(r) for r in results]}


def report(doc: dict) -> None:
    rows = doc["rows"]
    print(f"database: {rows['bars']:,} bars, {rows['jobs']:,} jobs, {rows['runs']:,} runs, "
          f"{rows['tasks']:,} tasks, {rows['requests']:,} requests (filled in {doc['fill_s']} s)")
    print(f"{'endpoint':<11} {'clients':>9} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'req/s':>8} {'server CPU ms/req':>18}")
    for r in doc["latency"]:
        clients = "build" if r["clients"] == 0 else str(r["clients"])
        flag = "" if r["clients"] <= 1 else ("  ok" if r["p99_ms"] <= doc["target_p99_ms"] else "  over target")
        cpu = "" if r["server_cpu_ms"] is None else r["server_cpu_ms"]
        print(f"{r['endpoint']:<11} {clients:>9} {r['requests']:>8} {r['p50_ms']:>8} "
              f"{r['p99_ms']:>8} {r['max_ms']:>8} {r['per_second']:>8} {cpu:>18}{flag}")
    print(f"build: the document through Session in-process, no HTTP; target: p99 under "
          f"{doc['target_p99_ms']} ms with the concurrent clients (client and server share the machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--bars", type=int, default=10_000, help="1h bars per series")
    parser.add_argument("--runs", type=int, default=1_000, help="runs (each with one job per symbol)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="requests per client per endpoint")
    parser.add_argument("--keep", type=Path, help="build the database in this directory and keep it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        doc = bench(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            doc = bench(args, Path(tmp))
    print(json.dumps(doc, indent=2)) if args.json else report(doc)


if __name__ == "__main__":
    main()
