"""End-to-end pipeline benchmark: the installed ``enrichctl`` as a process, demo provider,
N symbols x 1d x Y years (default 200 x 10), against a floor measured in the same run.

Floor: stdlib ``sqlite3`` ``executemany`` of the same bar and indicator rows into a fresh file
with the same table shapes, in one transaction (``bench/_floor.py``). Prints the ratio.
Targets: end to end at most 2x the floor (issue 13); peak RSS under 250 MB. Timings are reported, never
asserted (the machine is shared and noisy). Exit 1 only when the benchmark itself is broken:
the CLI failed, or its database and the floor's hold different numbers of rows.

    python bench/bench_pipeline.py [--symbols 200] [--years 10] [--repeat 1] [--keep] [--json]
                                   [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# The parent imports nothing heavy (no numpy, no enrichctl): on Linux a child's ru_maxrss
# starts from the RSS of the process it was forked from, so a fat parent would inflate it.
HERE = Path(__file__).resolve().parent
AS_OF = "2025-06-02T12:00"  # a Monday: the last complete day bar is Friday 2025-05-30
NEXT_DAY = "2025-06-03T12:00"  # one more session complete: one new bar per series
RATIO_TARGET = 2.0
RSS_TARGET_MB = 250.0
STARTUP_TRIES = 3
# Settings the environment could inject into the child; the benchmark sets its own.
FOREIGN_ENV = ("DATABASE_URL", "POLYGON_API_KEY", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")


@dataclass(frozen=True, slots=True)
class ChildRun:
    """One finished child process: wall seconds from spawn to reap, its CPU seconds (user +
    system, all threads), its peak RSS, its output."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class Figures:
    symbols: int
    years: int
    repeat: int
    floor_s: float
    end_to_end_s: float
    ratio: float
    floor_cpu_s: float
    end_to_end_cpu_s: float
    cpu_ratio: float  # steadier than the wall ratio when other work shares the cores
    startup_s: float
    fixed_run_s: float  # a run with next to nothing to do: imports, settings, calendar, store open
    in_run_s: float  # the CLI's own duration_s: after start-up and settings, before exit
    incremental_noop_s: float
    incremental_next_day_s: float
    peak_rss_mb: float
    incremental_peak_rss_mb: float
    bars: int
    indicator_rows: int
    bars_per_s: float
    floor_rows_match: bool
    floor_content_match: bool


def enrichctl_path() -> str:
    """The console script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("enrichctl")
    if beside.is_file():
        return str(beside)
    found = shutil.which("enrichctl")
    if found is None:
        sys.exit("bench: enrichctl is not installed (pip install -e .)")
    return found


def child_env(work: Path) -> dict[str, str]:
    """This environment minus anything that would configure enrichctl behind our back."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ENRICHCTL_") and k not in FOREIGN_ENV
    }
    env.update(XDG_CONFIG_HOME=str(work / "xdg-config"), XDG_DATA_HOME=str(work / "xdg-data"))
    return env


def child_run(argv: list[str], work: Path) -> ChildRun:
    """Run ``argv`` in ``work``; ``os.wait4`` gives this child's own peak RSS (Linux: KiB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=work, env=child_env(work), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        rss = usage.ru_maxrss * 1024 / 1e6
        return ChildRun(seconds, cpu, rss, proc.returncode, out.read(), err.read())


def cli_argv(db: Path, config: Path, symbols: list[str], as_of: str, *extra: str) -> list[str]:
    return [
        enrichctl_path(),
        "--config",
        str(config),
        "--database-url",
        f"sqlite:///{db}",
        "--log-level",
        "WARNING",
        "run",
        "--provider",
        "demo",
        "--symbols",
        ",".join(symbols),
        "--timeframes",
        "1d",
        "--as-of",
        as_of,
        "--json",
        *extra,
    ]


def cli_run(
    db: Path, config: Path, symbols: list[str], as_of: str, work: Path
) -> tuple[ChildRun, dict]:
    """One ``enrichctl run``; exits the benchmark when the run itself failed."""
    done = child_run(cli_argv(db, config, symbols, as_of), work)
    if done.returncode != 0:
        sys.exit(f"bench: enrichctl run exited {done.returncode}:\n{done.stderr[-2000:]}")
    return done, json.loads(done.stdout)


def floor_run(db: Path, symbols: list[str], history_days: int, work: Path) -> dict:
    argv = [
        sys.executable,
        str(HERE / "_floor.py"),
        "--db",
        str(db),
        "--symbols",
        ",".join(symbols),
        "--as-of",
        AS_OF,
        "--history-days",
        str(history_days),
    ]
    done = child_run(argv, work)
    if done.returncode != 0:
        sys.exit(f"bench: the floor failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def table_digest(db: Path, table: str) -> tuple[int, list[float]]:
    """(row count, sums of every numeric column); both tables iterate in primary-key order,
    so equal rows give bit-equal sums."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")][2:]
        sums = ", ".join(f"total({c})" for c in columns)
        count, *totals = conn.execute(f"SELECT count(*), {sums} FROM {table}").fetchone()
        return int(count), [float(t) for t in totals]
    finally:
        conn.close()


def same_rows(cli_db: Path, floor_db: Path) -> tuple[bool, bool, str]:
    """(counts equal, contents equal, a description of the first difference)."""
    for table in ("bars", "indicators"):
        (n_cli, sums_cli), (n_floor, sums_floor) = (
            table_digest(cli_db, table),
            table_digest(floor_db, table),
        )
        if n_cli != n_floor:
            return False, False, f"{table}: the CLI stored {n_cli} rows, the floor {n_floor}"
        if len(sums_cli) != len(sums_floor) or any(
            abs(a - b) > 1e-9 * max(abs(a), abs(b), 1.0) for a, b in zip(sums_cli, sums_floor)
        ):
            return True, False, f"{table}: same row count, different values"
    return True, True, ""


def best_seconds(argv: list[str], work: Path) -> float:
    """Best wall time of a short command over a few tries."""
    return min(child_run(argv, work).seconds for _ in range(STARTUP_TRIES))


def measure(symbols: list[str], years: int, repeat: int, work: Path) -> Figures:
    history_days = years * 365
    config = work / "bench.toml"
    config.write_text(f'provider = "demo"\n\n[history_days]\n"1d" = {history_days}\n')
    best: dict[str, float] = {}
    rss = rss_incremental = 0.0
    floor: dict = {}
    report: dict = {}
    rows_match = content_match = True
    for attempt in range(repeat):
        here = work / f"try{attempt}"
        here.mkdir()
        floor = floor_run(here / "floor.db", symbols, history_days, work)
        db = here / "bench.db"
        first, report = cli_run(db, config, symbols, AS_OF, work)
        match, same, why = same_rows(db, here / "floor.db")
        if not match:
            print(f"bench: BROKEN, the two databases differ: {why}", file=sys.stderr)
        elif not same:
            print(f"bench: WARNING: {why}", file=sys.stderr)
        rows_match, content_match = rows_match and match, content_match and same
        noop, _ = cli_run(db, config, symbols, AS_OF, work)
        next_day, _ = cli_run(db, config, symbols, NEXT_DAY, work)
        for name, value in (
            ("floor", floor["seconds"]),
            ("e2e", first.seconds),
            ("floor_cpu", floor["cpu_seconds"]),
            ("e2e_cpu", first.cpu_seconds),
            ("in_run", report["duration_s"]),
            ("noop", noop.seconds),
            ("next_day", next_day.seconds),
        ):
            best[name] = min(best.get(name, value), value)
        rss = max(rss, first.peak_rss_mb)
        rss_incremental = max(rss_incremental, noop.peak_rss_mb, next_day.peak_rss_mb)
    startup = best_seconds([enrichctl_path(), "--version"], work)
    # Plans one series of the filled database and stops: the cost every run pays before work.
    fixed = best_seconds(cli_argv(db, config, symbols[:1], NEXT_DAY, "--dry-run"), work)
    return Figures(
        symbols=len(symbols),
        years=years,
        repeat=repeat,
        floor_s=best["floor"],
        end_to_end_s=best["e2e"],
        ratio=best["e2e"] / best["floor"],
        floor_cpu_s=best["floor_cpu"],
        end_to_end_cpu_s=best["e2e_cpu"],
        cpu_ratio=best["e2e_cpu"] / best["floor_cpu"],
        startup_s=startup,
        fixed_run_s=fixed,
        in_run_s=best["in_run"],
        incremental_noop_s=best["noop"],
        incremental_next_day_s=best["next_day"],
        peak_rss_mb=rss,
        incremental_peak_rss_mb=rss_incremental,
        bars=report["bars_written"],
        indicator_rows=floor["indicator_rows"],
        bars_per_s=report["bars_written"] / best["e2e"],
        floor_rows_match=rows_match,
        floor_content_match=content_match,
    )


def table(f: Figures) -> str:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "OVER TARGET"

    lines = [
        ("floor (sqlite3 executemany, 1 tx)", f"{f.floor_s:8.2f} s", ""),
        ("end to end (enrichctl run, cold db)", f"{f.end_to_end_s:8.2f} s", ""),
        (
            "ratio end to end / floor",
            f"{f.ratio:8.2f} x",
            f"target <= {RATIO_TARGET:.1f}: {verdict(f.ratio <= RATIO_TARGET)}",
        ),
        (
            "ratio of CPU times (user + system)",
            f"{f.cpu_ratio:8.2f} x",
            f"{f.end_to_end_cpu_s:.2f} s / {f.floor_cpu_s:.2f} s; steadier on a busy machine",
        ),
        ("  of which start-up (--version)", f"{f.startup_s:8.2f} s", ""),
        ("  of which the run itself (duration_s)", f"{f.in_run_s:8.2f} s", ""),
        ("fixed cost of a run (--dry-run, 1 series)", f"{f.fixed_run_s:8.2f} s", ""),
        (
            "peak RSS, cold run",
            f"{f.peak_rss_mb:8.1f} MB",
            f"target < {RSS_TARGET_MB:.0f}: {verdict(f.peak_rss_mb < RSS_TARGET_MB)}",
        ),
        ("incremental run, nothing new", f"{f.incremental_noop_s:8.2f} s", ""),
        ("incremental run, one new day", f"{f.incremental_next_day_s:8.2f} s", ""),
        ("peak RSS, incremental runs", f"{f.incremental_peak_rss_mb:8.1f} MB", ""),
        ("bars", f"{f.bars:>10,d}", ""),
        ("indicator rows", f"{f.indicator_rows:>10,d}", ""),
        ("bars/s end to end", f"{f.bars_per_s:>10,.0f}", ""),
    ]
    head = f"enrichctl pipeline: {f.symbols} symbols x 1d x {f.years} years, best of {f.repeat}"
    body = [f"  {name:<40}{value:>12}  {note}".rstrip() for name, value, note in lines]
    return "\n".join([head, *body])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200, help="how many symbols (default 200)")
    parser.add_argument("--years", type=int, default=10, help="years of day bars (default 10)")
    parser.add_argument("--repeat", type=int, default=1, help="best of K (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="afterwards, profile a cold run (cProfile) and the imports of a run into DIR",
    )
    args = parser.parse_args(argv)
    if args.symbols < 1 or args.years < 1 or args.repeat < 1:
        parser.error("--symbols, --years and --repeat must be at least 1")
    width = max(3, len(str(args.symbols - 1)))
    symbols = [f"S{i:0{width}d}" for i in range(args.symbols)]
    work = Path(tempfile.mkdtemp(prefix="enrichctl-bench-"))
    try:
        figures = measure(symbols, args.years, args.repeat, work)
        print(json.dumps(asdict(figures), indent=2) if args.json else table(figures))
        if args.profile is not None:
            from _profile import profile_report  # only when asked

            config = work / "bench.toml"
            cold = cli_argv(work / "profile.db", config, symbols, AS_OF)
            fixed = cli_argv(work / "profile.db", config, symbols[:1], NEXT_DAY, "--dry-run")
            print(profile_report(cold, fixed, args.profile, child_env(work), work))
    finally:
        if args.keep:
            print(f"bench: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if figures.floor_rows_match else 1


if __name__ == "__main__":
    sys.exit(main())
