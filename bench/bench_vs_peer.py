"""enrichctl against the script a user would write instead (``bench/peer_polygon.py``: the
official Polygon client + pandas + TA-Lib + ``to_sql`` into SQLite, 5 threads), both against
the project's fake Polygon in its own process (``bench/_fake_server.py``, 30 ms per answer).
Every figure is a ratio measured in this run; none is asserted (issue 13's targets):

1. backfill of N stocks x 1d since 2016, enrichctl / peer wall: median of 3 interleaved pairs
   (target <= 0.7);
2. nightly update of M stocks (backfilled through a few sessions ago; the update brings the
   missing sessions through grouped daily) / the peer's full refetch (target <= 0.2), and the
   marginal cost per symbol (update of M against update of M/10);
3. PostgreSQL / SQLite for the backfill of 1. (target <= 1.3);
4. ``bench_pipeline`` end to end / the raw-SQLite floor (target <= 2), and start-up
   (``enrichctl --version``, ``status`` on a small database) beside ``python -c pass``;
5. peak RSS at N and at M symbols (target < 250 MB, flat).

    python bench/bench_vs_peer.py [--symbols 100] [--nightly-symbols 2000] [--pairs 3]
                                  [--latency 0.03] [--no-postgres] [--no-pipeline] [--json]

Needs the bench extra (``pip install -e '.[bench]'``). Exit 1 only when the benchmark itself is
broken (a run failed, or enrichctl and the peer stored different numbers of bars).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Nothing heavy in this parent (see bench_pipeline.py): the children's peak RSS stays theirs.
from bench_pipeline import child_run, enrichctl_path  # noqa: E402

SINCE = "2016-01-01"
AS_OF = "2025-06-02T12:00"  # Monday 08:00 New York: the last complete day bar is Friday 05-30
LAST_DAY = "2025-05-30"
BEHIND_AS_OF = "2025-05-28T12:00"  # backfilled through Tuesday 05-27: three sessions behind
TARGETS = {"backfill": 0.7, "nightly": 0.2, "postgres": 1.3, "pipeline": 2.0, "rss_mb": 250.0}


class Broken(Exception):
    """The benchmark itself is broken: its figures would mean nothing."""


class Server:
    """``_fake_server.py`` as a child process; ``url`` once it serves."""

    def __init__(self, symbols: list[str], latency: float) -> None:
        argv = [sys.executable, str(HERE / "_fake_server.py"), "--symbols", ",".join(symbols),
                "--since", SINCE, "--until", AS_OF, "--latency", str(latency)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise Broken("the fake Polygon did not start")
        hello = json.loads(line)
        self.url, self.key, self.bars = hello["url"], hello["key"], hello["bars"]

    def close(self) -> dict[str, int]:
        self.proc.stdin.close()
        tail = self.proc.stdout.read()
        self.proc.wait(30)
        return json.loads(tail)["requests"] if tail.strip() else {}


def stores(*args: str) -> str:
    done = subprocess.run([sys.executable, str(HERE / "_stores.py"), *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise Broken(f"_stores.py {' '.join(args[:1])}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def bars_in(url: str) -> int:
    return json.loads(stores("count", url))["bars"]


def write_config(work: Path, server: Server) -> Path:
    config = work / f"polygon-{server.proc.pid}.toml"
    config.write_text(
        'provider = "polygon"\nmax_retries = 0\nretry_delay_seconds = 0\n'
        f'[polygon]\nbase_url = "{server.url}"\napi_key = "{server.key}"\nrequests_per_minute = 0\n'
    )
    return config


def enrichctl(work: Path, config: Path, url: str, symbols: list[str], as_of: str, *extra: str):
    argv = [enrichctl_path(), "--config", str(config), "--database-url", url, "--log-level",
            "WARNING", "run", "--symbols", ",".join(symbols), "--timeframes", "1d", "--as-of",
            as_of, "--json", *extra]
    done = child_run(argv, work)
    if done.returncode != 0:
        raise Broken(f"enrichctl run exited {done.returncode}:\n{done.stderr[-2000:]}")
    progress(f"enrichctl {len(symbols)} symbols as of {as_of} on {url.split(':')[0]}", done)
    return done


def peer(work: Path, server: Server, db: Path, symbols: list[str]):
    argv = [sys.executable, str(HERE / "peer_polygon.py"), "--base", server.url, "--key",
            server.key, "--db", str(db), "--symbols", ",".join(symbols), "--since", SINCE,
            "--until", LAST_DAY]
    done = child_run(argv, work)
    if done.returncode != 0:
        raise Broken(f"the peer exited {done.returncode}:\n{done.stderr[-2000:]}")
    progress(f"peer {len(symbols)} symbols", done)
    return done


def progress(what: str, done) -> None:
    """One line per child on stderr: a long benchmark shows where it is."""
    print(f"bench: {what}: {done.seconds:.2f} s, CPU {done.cpu_seconds:.2f} s, "
          f"{done.peak_rss_mb:.0f} MB", file=sys.stderr, flush=True)


def backfill(work: Path, symbols: list[str], pairs: int, latency: float, postgres: bool) -> dict[str, Any]:
    """Interleaved rounds of (peer, enrichctl on SQLite[, enrichctl on PostgreSQL]), the order
    rotating each round so neither always runs on a warmer machine."""
    server = Server(symbols, latency)
    config = write_config(work, server)
    times: dict[str, list[float]] = {"peer": [], "sqlite": [], "postgres": []}
    cpu: dict[str, list[float]] = {"peer": [], "sqlite": []}
    rss: list[float] = []
    counts: set[int] = set()
    try:
        for round_ in range(pairs):
            kinds = ["peer", "sqlite"] + (["postgres"] if postgres else [])
            kinds = kinds[round_ % len(kinds):] + kinds[: round_ % len(kinds)]
            for kind in kinds:
                if kind == "peer":
                    db = work / f"peer-{round_}.db"
                    done = peer(work, server, db, symbols)
                    times["peer"].append(done.seconds)
                    cpu["peer"].append(done.cpu_seconds)
                    counts.add(bars_in(f"sqlite:///{db}"))
                    continue
                if kind == "sqlite":
                    url = f"sqlite:///{work / f'enrichctl-{round_}.db'}"
                else:
                    url = stores("create", f"enrichctl_bench13_{os.getpid()}_{round_}")
                try:
                    done = enrichctl(work, config, url, symbols, AS_OF, "--since", SINCE)
                    times[kind].append(done.seconds)
                    cpu.setdefault(kind, []).append(done.cpu_seconds)
                    rss.append(done.peak_rss_mb)
                    counts.add(bars_in(url))
                finally:
                    if kind == "postgres":
                        stores("drop", url.rsplit("/", 1)[1])
    finally:
        requests = server.close()
    if len(counts) != 1:
        raise Broken(f"enrichctl and the peer stored different numbers of bars: {sorted(counts)}")
    med = {k: statistics.median(v) for k, v in times.items() if v}
    ratios = [e / p for e, p in zip(times["sqlite"], times["peer"])]
    out = {"symbols": len(symbols), "bars": counts.pop(), "peer_s": times["peer"],
           "enrichctl_s": times["sqlite"], "ratio": statistics.median(ratios),
           "peer_cpu_s": cpu["peer"], "enrichctl_cpu_s": cpu["sqlite"],
           "cpu_ratio": statistics.median(cpu["sqlite"]) / statistics.median(cpu["peer"]),
           "peak_rss_mb": max(rss), "requests": requests}
    if postgres:
        out.update(postgres_s=times["postgres"], postgres_ratio=med["postgres"] / med["sqlite"])
    return out


def nightly(work: Path, symbols: list[str], latency: float) -> dict[str, Any]:
    """Backfill every symbol through three sessions ago (not timed), then the update that
    brings the three sessions, against the peer's full refetch; the same for a tenth of the
    symbols, for the marginal cost of one more symbol."""
    small = symbols[: max(1, len(symbols) // 10)]
    server = Server(symbols, latency)
    config = write_config(work, server)
    try:
        behind: dict[int, str] = {}
        for group in (small, symbols):
            url = f"sqlite:///{work / f'nightly-{len(group)}.db'}"
            done = enrichctl(work, config, url, group, BEHIND_AS_OF, "--since", SINCE)
            behind[len(group)] = url
            if group is symbols:
                backfill_rss, backfill_s = done.peak_rss_mb, done.seconds
        update = {n: enrichctl(work, config, url, symbols if n == len(symbols) else small, AS_OF)
                  for n, url in behind.items()}
        full = peer(work, server, work / "peer-nightly.db", symbols)
    finally:
        requests = server.close()
    big, little = update[len(symbols)], update[len(small)]
    marginal_ms = (big.seconds - little.seconds) / max(1, len(symbols) - len(small)) * 1000
    return {"symbols": len(symbols), "backfill_s": backfill_s, "backfill_peak_rss_mb": backfill_rss,
            "update_s": big.seconds, "update_cpu_s": big.cpu_seconds,
            "update_peak_rss_mb": big.peak_rss_mb, "peer_full_refetch_cpu_s": full.cpu_seconds,
            "update_small_symbols": len(small), "update_small_s": little.seconds,
            "marginal_ms_per_symbol": marginal_ms, "peer_full_refetch_s": full.seconds,
            "ratio": big.seconds / full.seconds, "requests_all_phases": requests}


def startup(work: Path, tries: int = 5) -> dict[str, float]:
    """Best of ``tries``: ``python -c pass``, ``enrichctl --version``, ``status`` on a small
    database (one demo series)."""
    db = work / "small.db"
    demo = [enrichctl_path(), "--database-url", f"sqlite:///{db}", "--log-level", "WARNING"]
    if child_run(demo + ["run", "--provider", "demo", "--symbols", "AAPL", "--timeframes", "1d",
                         "--as-of", AS_OF], work).returncode != 0:
        raise Broken("the small demo run failed")

    def best(argv: list[str]) -> float:
        return min(child_run(argv, work).seconds for _ in range(tries))

    python = best([sys.executable, "-c", "pass"])
    version = best([enrichctl_path(), "--version"])
    status = best(demo + ["status", "--as-of", AS_OF])
    return {"python_s": python, "version_s": version, "status_s": status,
            "version_ratio": version / python, "status_ratio": status / python}


def pipeline(work: Path) -> dict[str, float]:
    from bench_pipeline import measure

    here = work / "pipeline"
    here.mkdir()
    f = measure([f"S{i:03d}" for i in range(200)], 10, 1, here)
    return {"floor_s": f.floor_s, "end_to_end_s": f.end_to_end_s, "ratio": f.ratio,
            "cpu_ratio": f.cpu_ratio, "peak_rss_mb": f.peak_rss_mb}


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "OVER TARGET"


def report(fig: dict[str, Any]) -> str:
    b, lines = fig["backfill"], []
    lines.append(f"1. backfill {b['symbols']} stocks x 1d since {SINCE[:4]} ({b['bars']:,} bars), "
                 f"median of {len(b['peer_s'])} pairs")
    lines.append(f"   peer {statistics.median(b['peer_s']):.2f} s, enrichctl "
                 f"{statistics.median(b['enrichctl_s']):.2f} s: {b['ratio']:.2f}x "
                 f"(target <= {TARGETS['backfill']}: {verdict(b['ratio'], TARGETS['backfill'])}); "
                 f"CPU {b['cpu_ratio']:.2f}x")
    if "nightly" in fig:
        n = fig["nightly"]
        lines.append(f"2. nightly update of {n['symbols']} stocks (3 sessions): {n['update_s']:.2f} s "
                     f"vs the peer's full refetch {n['peer_full_refetch_s']:.2f} s: {n['ratio']:.2f}x "
                     f"(target <= {TARGETS['nightly']}: {verdict(n['ratio'], TARGETS['nightly'])})")
        lines.append(f"   update of {n['update_small_symbols']}: {n['update_small_s']:.2f} s; "
                     f"marginal cost {n['marginal_ms_per_symbol']:.2f} ms per symbol")
    if "postgres_ratio" in b:
        lines.append(f"3. PostgreSQL {statistics.median(b['postgres_s']):.2f} s / SQLite: "
                     f"{b['postgres_ratio']:.2f}x (target <= {TARGETS['postgres']}: "
                     f"{verdict(b['postgres_ratio'], TARGETS['postgres'])})")
    if "pipeline" in fig:
        p = fig["pipeline"]
        lines.append(f"4. bench_pipeline {p['end_to_end_s']:.2f} s / floor {p['floor_s']:.2f} s: "
                     f"{p['ratio']:.2f}x (CPU {p['cpu_ratio']:.2f}x; target <= {TARGETS['pipeline']}: "
                     f"{verdict(p['ratio'], TARGETS['pipeline'])})")
    s = fig["startup"]
    lines.append(f"   start-up: python -c pass {s['python_s']:.3f} s, enrichctl --version "
                 f"{s['version_s']:.3f} s ({s['version_ratio']:.1f}x), status {s['status_s']:.3f} s "
                 f"({s['status_ratio']:.1f}x)")
    rss = [("backfill", b["symbols"], b["peak_rss_mb"])]
    if "nightly" in fig:
        n = fig["nightly"]
        rss += [("backfill", n["symbols"], n["backfill_peak_rss_mb"]),
                ("update", n["symbols"], n["update_peak_rss_mb"])]
    worst = max(r for *_, r in rss)
    lines.append("5. peak RSS: " + ", ".join(f"{k} {n}: {r:.0f} MB" for k, n, r in rss)
                 + f" (target < {TARGETS['rss_mb']:.0f}: {verdict(worst, TARGETS['rss_mb'])})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100, help="backfill stocks (default 100)")
    parser.add_argument("--nightly-symbols", type=int, default=2000, help="0 skips the nightly figure")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved backfill rounds (default 3)")
    parser.add_argument("--latency", type=float, default=0.030, help="seconds per answer (default 0.03)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL figure")
    parser.add_argument("--no-pipeline", action="store_true", help="skip bench_pipeline")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="enrichctl-vs-peer-"))
    try:
        fig: dict[str, Any] = {"startup": startup(work)}
        fig["backfill"] = backfill(work, [f"B{i:04d}" for i in range(args.symbols)], args.pairs,
                                   args.latency, not args.no_postgres)
        if args.nightly_symbols:
            fig["nightly"] = nightly(work, [f"N{i:04d}" for i in range(args.nightly_symbols)], args.latency)
        if not args.no_pipeline:
            fig["pipeline"] = pipeline(work)
        print(json.dumps(fig, indent=2) if args.json else report(fig))
    except Broken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"bench: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
