"""A process SIGKILLed at any instant of schema creation or of the 0001 -> head upgrade leaves a
database every command accepts (the old schema or the new one, never half of it), and processes
starting together on a new database all get a working schema.

The kill is exact: the child (migrate_and_die.py) kills itself just before its N-th SQL statement,
for every N the migration has.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from enrichctl.store import migrate
from enrichctl.store.repo import Store

CHILD = str(Path(__file__).with_name("migrate_and_die.py"))
# Every this many kill instants the installed CLI is run on the survivor too (slower than
# opening the store in-process, which happens at every instant).
CLI_EVERY = 10


def _child(url: str, revision: str, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, CHILD, url, revision, str(kill_at)],
                          capture_output=True, text=True, timeout=120)


def _statements(tmp_path: Path, revision_first: str | None) -> int:
    url = f"sqlite:///{tmp_path / 'count.db'}"
    if revision_first:
        assert _child(url, revision_first, 0).returncode == 0
    done = _child(url, "head", 0)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def _revision(path: Path) -> str | None:
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return migrate.current_revision(conn)
    finally:
        engine.dispose()


def _enrichctl() -> str:
    beside = Path(sys.executable).parent / "enrichctl"
    return str(beside) if beside.is_file() else shutil.which("enrichctl") or "enrichctl"


def _cli(path: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "c"),
           "XDG_DATA_HOME": str(tmp_path / "d"), "ENRICHCTL_DATABASE_URL": f"sqlite:///{path}"}
    return subprocess.run([_enrichctl(), *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("start", [None, "0001"], ids=["new-file", "upgrade-from-0001"])
def test_a_kill_at_any_statement_of_a_migration_leaves_a_usable_database(tmp_path, start):
    total = _statements(tmp_path, start)
    assert total > 10  # the child really counted the migration's statements
    for kill_at in range(1, total + 1):
        path = tmp_path / f"kill{kill_at}.db"
        url = f"sqlite:///{path}"
        if start:
            assert _child(url, start, 0).returncode == 0
        killed = _child(url, "head", kill_at)
        assert killed.returncode == -9, f"instant {kill_at}: the child was not killed"
        # The old schema or none, never a half-built one: nothing in between is at another revision.
        assert _revision(path) in ({start} if start else {None}) | {migrate.HEAD}, kill_at
        asyncio.run(_reopen(url))
        assert _revision(path) == migrate.HEAD
        if kill_at % CLI_EVERY == 1 or kill_at == total:
            commands = [("db", "upgrade"), ("status",)]
            if kill_at == total:
                commands.append(("run", "--provider", "demo", "--symbols", "AAPL",
                                 "--since", "2024-01-01"))
            for args in commands:
                done = _cli(path, tmp_path, *args)
                assert done.returncode == 0, f"instant {kill_at}: {args}: {done.stderr[-300:]}"


async def _reopen(url: str) -> None:
    store = await Store.open(url, ["sma_20", "rsi_14"])
    await store.close()


def test_three_processes_migrating_one_new_sqlite_file_at_once_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'together.db'}"
    children = [subprocess.Popen([sys.executable, CHILD, url, "head", "0"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(c.wait(timeout=120), c.stderr.read()) for c in children]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    assert _revision(tmp_path / "together.db") == migrate.HEAD
