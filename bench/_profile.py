"""Where the time of one cold ``enrichctl run`` goes: cProfile of the whole process, and
``python -X importtime`` of a run's imports. Used by ``bench_pipeline.py --profile DIR``.

Read the shares, not the seconds: the profiler slows Python-heavy code (SQLAlchemy's per-row
parameter handling) far more than C (SQLite, TA-Lib, numpy), and it sees only the main thread:
aiosqlite runs SQLite in a thread of its own, whose work shows here as ``epoll.poll`` waits.
"""

from __future__ import annotations

import pstats
import re
import subprocess
import sys
from pathlib import Path

TOP_FUNCTIONS = 25
TOP_IMPORTS = 15
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def profile_report(
    cold_argv: list[str], fixed_argv: list[str], out_dir: Path, env: dict[str, str], cwd: Path
) -> str:
    """cProfile ``cold_argv`` (a run on a fresh database), then ``-X importtime`` of
    ``fixed_argv`` (a run with nothing to do, run after it); the raw files go to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prof = out_dir / "pipeline.prof"
    # The console script is a Python file: cProfile runs it as __main__, SystemExit included.
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(prof), *cold_argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    imports = out_dir / "importtime.txt"
    with imports.open("w") as err:
        subprocess.run(
            [sys.executable, "-X", "importtime", *fixed_argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            check=True,
        )
    return "\n".join(
        [f"\nprofile written to {prof} and {imports}", functions_top(prof), imports_top(imports)]
    )


def _where(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name  # a builtin, e.g. <method 'executemany' of 'sqlite3.Cursor' objects>
    short = re.sub(r".*/(site-packages|lib/python3\.\d+|enrichctl)/", r"\1/", filename)
    return f"{short}:{line}({name})"


def functions_top(prof: Path) -> str:
    """enrichctl's own functions by cumulative time (the plumbing above them -- asyncio, click --
    says nothing), then every function by its own time."""
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    total = max(ct for _, _, _, ct, _ in stats.values())
    rows = [(ct, tt, nc, _where(key)) for key, (_, nc, tt, ct, _) in stats.items()]
    ours = [r for r in rows if r[3].startswith("enrichctl/")]
    lines = [f"cProfile of one run: {total:.2f} s under the profiler"]
    for title, chosen, order in (("enrichctl by cumulative", ours, 0), ("all by own", rows, 1)):
        lines.append(f"  top {TOP_FUNCTIONS} {title} time:\n     cum s   own s     calls  function")
        for ct, tt, nc, where in sorted(chosen, key=lambda r: r[order], reverse=True)[
            :TOP_FUNCTIONS
        ]:
            lines.append(f"   {ct:7.2f} {tt:7.2f} {nc:9d}  {where}")
    return "\n".join(lines)


def imports_top(path: Path) -> str:
    """The slowest packages of start-up, each counted where another package first imports it
    (cumulative, so a package's own dependencies are inside its figure)."""
    entries = []  # (depth, cumulative us, module) in the file's order: children before parents
    for line in path.read_text().splitlines():
        if match := _IMPORT_LINE.match(line):
            entries.append(((len(match.group(3)) - 1) // 2, int(match.group(2)), match.group(4)))
    roots: list[tuple[int, str]] = []
    parents: list[str] = []  # reversed, the file is a pre-order walk: parents[d] is at depth d
    for depth, us, name in reversed(entries):
        del parents[depth:]
        parent = parents[-1] if parents else ""
        if name.split(".")[0] != parent.split(".")[0]:
            roots.append((us, f"{name}  (imported by {parent or 'the script or lazily'})"))
        parents.append(name)
    total = sum(us for depth, us, _ in entries if depth == 0)
    lines = [f"imports of a run (python -X importtime): {total / 1e6:.2f} s in all"]
    for us, name in sorted(roots, reverse=True)[:TOP_IMPORTS]:
        lines.append(f"   {us / 1e6:7.3f} s  {name}")
    return "\n".join(lines)
