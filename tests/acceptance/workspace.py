"""A clean machine to run the installed ``enrichctl`` on, as a real process.

Every command runs in a ``Workspace``: a fresh HOME, XDG config and data directory and working
directory, with the developer's own settings and secrets stripped from the environment, so a test
sees exactly what a new user on a clean machine would see.

Its database is enrichctl's default SQLite file under ``$XDG_DATA_HOME`` or, for the PostgreSQL
half of the suite, a fresh database on a server (``PostgresServer``) handed over as the seed's
``DATABASE_URL``. Either way the test reads it back through an independent synchronous driver
(sqlite3 / psycopg2) with the same calls: ``query``, ``execute``, ``bars``, ``tables``, ``dump``.
"""

from __future__ import annotations

import os
import pty
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

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


def one_error(result: Result, code: int, *needles: str) -> None:
    """``result`` exited ``code`` with exactly one line on stderr: enrichctl's own error line,
    naming each of ``needles``, no traceback, no internal error."""
    assert result.code == code, result
    assert len(result.err_lines) == 1, result
    line = result.err_lines[0]
    assert line.startswith("enrichctl: error: "), result
    assert "internal error" not in line and "Traceback" not in line, result
    for needle in needles:
        assert needle in line, result


class Workspace:
    """One user's clean machine: its own HOME, XDG directories, cwd and database.

    ``database`` None: enrichctl's default SQLite file (``db_path``); a ``PostgresDatabase``: that
    database, given to every command as ``DATABASE_URL`` (``env`` may still override it)."""

    def __init__(self, root: Path, env: Mapping[str, str] | None = None,
                 database: PostgresDatabase | None = None) -> None:
        self.root = root
        self.home = root / "home"
        self.config_home = root / "config"
        self.data_home = root / "data"
        for directory in (self.home, self.config_home, self.data_home):
            directory.mkdir(parents=True, exist_ok=True)
        # Where enrichctl puts its SQLite file by default (on PostgreSQL: where it must not).
        self.db_path = self.data_home / "enrichctl" / "enrichctl.db"
        self.database: SqliteFile | PostgresDatabase = database or SqliteFile(self.db_path)
        self.env = clean_env(self.home, self.config_home, self.data_home)
        self.env.update(self.database.env())
        self.env.update(env or {})
        self.exe = enrichctl_path()
        self.results: list[Result] = []  # every command this machine ran, in order of completion
        self._engine: sa.Engine | None = None

    @property
    def backend(self) -> str:
        return self.database.backend

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

    # --- the database, read back behind enrichctl's back ---------------------------------------

    def engine(self) -> sa.Engine:
        """A synchronous engine on the database (NullPool: nothing stays connected)."""
        # Connecting to a missing SQLite file would create it and hide that enrichctl made none.
        if not self.database.exists():
            raise AssertionError(f"no database at {self.db_path}")
        if self._engine is None:
            self._engine = self.database.engine()
        return self._engine

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Rows of one statement, ``?`` placeholders, on either backend (booleans come back as
        True/False from PostgreSQL and 1/0 from SQLite: equal in Python)."""
        with self.engine().connect() as conn:
            return [tuple(row) for row in conn.execute(*_bind(sql, params)).all()]

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        """Change the database behind enrichctl's back (to damage it on purpose), committed."""
        with self.engine().begin() as conn:
            conn.execute(*_bind(sql, params))

    def bars(self, symbol: str, timeframe: str = "1d") -> list[tuple]:
        """The stored bars of one series, oldest first."""
        return self.query(
            "SELECT * FROM bars WHERE symbol = ? AND timeframe = ? ORDER BY ts", (symbol, timeframe)
        )

    def tables(self) -> set[str]:
        """The tables enrichctl created; empty while it has created no database or schema."""
        if not self.database.exists():
            return set()
        return set(sa.inspect(self.engine()).get_table_names())

    def dump(self) -> dict[str, list[tuple]]:
        """Every table, every row, in a fixed order: two equal dumps mean nothing stored changed."""
        engine = self.engine()
        inspector = sa.inspect(engine)
        dump: dict[str, list[tuple]] = {}
        with engine.connect() as conn:
            for table in sorted(inspector.get_table_names()):
                width = len(inspector.get_columns(table))
                order = ", ".join(str(i) for i in range(1, width + 1))
                rows = conn.execute(sa.text(f'SELECT * FROM "{table}" ORDER BY {order}')).all()
                dump[table] = [tuple(row) for row in rows]
        return dump

    def clone(self, root: Path) -> Workspace:
        """A new machine holding a copy of this database (on the same backend)."""
        if isinstance(self.database, PostgresDatabase):
            return Workspace(root, database=self.database.copy())
        twin = Workspace(root)
        twin.db_path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            source = self.db_path.with_name(self.db_path.name + suffix)
            if source.exists():
                shutil.copy2(source, twin.db_path.with_name(twin.db_path.name + suffix))
        return twin


# ``new_machine(root)`` (a fixture): a clean machine with an empty database on the test's backend.
NewMachine = Callable[[Path], Workspace]


def _bind(sql: str, params: Sequence[object]) -> tuple[sa.TextClause, dict[str, object]]:
    """``?`` placeholders (the sqlite3 shell's) as named parameters, which both drivers take."""
    if not params:
        return sa.text(sql), {}
    pieces = sql.split("?")
    if len(pieces) != len(params) + 1:
        raise ValueError(f"{len(params)} parameters for {len(pieces) - 1} placeholders: {sql}")
    named = pieces[0] + "".join(f":p{i}{piece}" for i, piece in enumerate(pieces[1:]))
    return sa.text(named), {f"p{i}": value for i, value in enumerate(params)}


# --- databases --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SqliteFile:
    """enrichctl's default database: a SQLite file it creates under ``$XDG_DATA_HOME``."""

    path: Path
    backend: ClassVar[str] = "sqlite"

    def env(self) -> dict[str, str]:
        return {}  # the default needs no setting

    def exists(self) -> bool:
        return self.path.exists()

    def engine(self) -> sa.Engine:
        return sa.create_engine(f"sqlite:///{self.path}", poolclass=NullPool)


class PostgresServer:
    """A PostgreSQL server on which the test session creates databases and drops them all."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.prefix = f"enrichctl_accept_{secrets.token_hex(4)}"
        self.created: list[str] = []
        self._admin = sa.create_engine(
            self.admin_url.set(drivername="postgresql+psycopg2"), poolclass=NullPool,
            isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3},
        )

    def check(self) -> None:
        """Raises ``sqlalchemy.exc.OperationalError`` when the server cannot be reached."""
        with self._admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def create(self, template: str = "template0") -> PostgresDatabase:
        """A new database: empty, or a copy of ``template`` (which nobody may be connected to)."""
        name = f"{self.prefix}_{len(self.created) + 1}"
        # A process that just exited may still show as connected for a moment.
        for attempt in range(50):
            try:
                with self._admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
                break
            except sa.exc.OperationalError as exc:
                if "is being accessed by other users" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)
        self.created.append(name)
        return PostgresDatabase(self, name)

    def url(self, name: str, driver: str) -> URL:
        return self.admin_url.set(database=name, drivername=driver)

    def drop_all(self) -> None:
        with self._admin.connect() as conn:
            for name in self.created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    """One database of the session's server, given to enrichctl in the seed's plain form."""

    server: PostgresServer
    name: str
    backend: ClassVar[str] = "postgresql"

    @property
    def url(self) -> str:
        """``postgresql://user@host:port/name``, as a user writes it in DATABASE_URL."""
        return self.server.url(self.name, "postgresql").render_as_string(hide_password=False)

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url}

    def exists(self) -> bool:
        return True  # created by the fixture; enrichctl only fills it

    def engine(self) -> sa.Engine:
        # NullPool: no connection outlives a query, so copying or dropping it never waits on us.
        return sa.create_engine(self.server.url(self.name, "postgresql+psycopg2"), poolclass=NullPool)

    def copy(self) -> PostgresDatabase:
        return self.server.create(template=self.name)


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
