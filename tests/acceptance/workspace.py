"""A clean machine to run the installed ``enrichctl`` on, as a real process.

Every command runs in a ``Workspace``: a fresh HOME, XDG config and data directory and working
directory, with the developer's own settings and secrets stripped from the environment, so a test
sees exactly what a new user on a clean machine would see.
"""

from __future__ import annotations

import os
import pty
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

# The market time every deterministic run pretends it is: the last complete day bar is 3 June 2024
# (a day bar is complete once its New York day has ended).
AS_OF = "2024-06-05T00:00"
LAST_BAR = "2024-06-03T04:00:00Z"
SINCE = "2023-01-01"

# Variables that would let a developer's machine leak into a test: their settings, their key,
# their database, a forced terminal width or colour.
_STRIPPED = ("POLYGON_API_KEY", "DATABASE_URL", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY",
             "COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
_STRIPPED_PREFIXES = ("ENRICHCTL_", "XDG_")

# Independent commands run side by side; more would only thrash the two cores of CI.
PARALLEL = 3


def enrichctl_path() -> str:
    """The console script installed next to the interpreter running the tests."""
    beside = Path(sys.executable).parent / "enrichctl"
    if beside.is_file():
        return str(beside)
    found = shutil.which("enrichctl")
    if found is None:
        raise RuntimeError("the enrichctl entry point is not installed (pip install -e '.[test]')")
    return found


@dataclass(frozen=True, slots=True, repr=False)
class Result:
    """One finished command. Its full output is in the test's captured stdout (see ``_log``)."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def __repr__(self) -> str:  # short: pytest cuts assertion messages at 240 characters
        return f"<enrichctl {' '.join(self.args)} exited {self.code}; see the captured stdout>"

    def __str__(self) -> str:
        return (f"$ enrichctl {' '.join(self.args)}  -> exit {self.code}\n"
                f"--- stdout\n{self.out}--- stderr\n{self.err}--- end\n")


class Workspace:
    """One user's clean machine: its own HOME, XDG directories, cwd and database."""

    def __init__(self, root: Path, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.home = root / "home"
        self.config_home = root / "config"
        self.data_home = root / "data"
        for directory in (self.home, self.config_home, self.data_home):
            directory.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_home / "enrichctl" / "enrichctl.db"
        self.env = clean_env(self.home, self.config_home, self.data_home)
        self.env.update(env or {})
        self.exe = enrichctl_path()
        self.results: list[Result] = []  # every command this machine ran, in order of completion

    def __call__(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> Result:
        """Run ``enrichctl ARGS`` to completion with stdout and stderr piped."""
        proc = subprocess.run(
            [self.exe, *args], cwd=self.root, env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
        )
        return self._log(Result(tuple(args), proc.returncode, proc.stdout, proc.stderr))

    def run_on_terminal(self, *args: str, timeout: float = 60) -> Result:
        """Run ``enrichctl ARGS`` with stderr on a terminal (where progress and colours go) and
        stdout piped, as in ``enrichctl run > summary.txt`` typed at a shell."""
        main, child = pty.openpty()
        try:
            proc = subprocess.Popen(
                [self.exe, *args], cwd=self.root, env={**self.env, "TERM": "xterm-256color"},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child,
            )
        finally:
            os.close(child)
        chunks: list[bytes] = []
        # A terminal nobody reads blocks the child once its buffer is full.
        reader = threading.Thread(target=_drain, args=(main, chunks), daemon=True)
        reader.start()
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            reader.join(timeout=10)
            os.close(main)
        err = b"".join(chunks).decode(errors="replace")
        return self._log(Result(tuple(args), proc.returncode, out.decode(), err))

    def _log(self, result: Result) -> Result:
        """Keep the result, and print it: pytest shows it with a failing test."""
        self.results.append(result)
        print(result)
        return result

    def many(self, argvs: Iterable[Sequence[str]]) -> list[Result]:
        """Run independent commands side by side; results in the order given."""
        return side_by_side((self, argv) for argv in argvs)

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Read the database the way a user with the sqlite3 shell would."""
        with _connect(self.db_path) as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        """Change the database behind enrichctl's back (to damage it on purpose)."""
        with _connect(self.db_path) as conn:
            conn.execute(sql, params)
            conn.commit()

    def bars(self, symbol: str, timeframe: str = "1d") -> list[tuple]:
        """The stored bars of one series, oldest first."""
        return self.query(
            "SELECT * FROM bars WHERE symbol = ? AND timeframe = ? ORDER BY ts", (symbol, timeframe)
        )

    def dump(self) -> str:
        """Every table, row by row: two equal dumps mean nothing stored changed."""
        with _connect(self.db_path) as conn:
            return "\n".join(conn.iterdump())

    def clone(self, root: Path) -> Workspace:
        """A new machine holding a copy of this database."""
        twin = Workspace(root)
        twin.db_path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            source = self.db_path.with_name(self.db_path.name + suffix)
            if source.exists():
                shutil.copy2(source, twin.db_path.with_name(twin.db_path.name + suffix))
        return twin


def _drain(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return
        if not data:
            return
        chunks.append(data)


def side_by_side(commands: Iterable[tuple[Workspace, Sequence[str]]]) -> list[Result]:
    """Run independent commands, each on its machine, at the same time; results in order."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda job: job[0](*job[1]), commands))


def clean_env(home: Path, config_home: Path, data_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _STRIPPED and not k.startswith(_STRIPPED_PREFIXES)}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(config_home), XDG_DATA_HOME=str(data_home))
    return env


def _connect(path: Path) -> closing[sqlite3.Connection]:
    """A connection that is closed, not only committed, when the block ends."""
    if not path.exists():
        raise AssertionError(f"no database at {path}")
    return closing(sqlite3.connect(path))
