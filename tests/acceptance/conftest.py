"""Acceptance tests: the installed ``enrichctl`` entry point as a real process (see ``workspace``).

Every test that is not about one backend runs twice, through the ``backend`` parameter: on the
default SQLite file and on PostgreSQL. PostgreSQL comes from ``$ENRICHCTL_TEST_POSTGRES_URL`` or
the local server (trust auth); the session creates its own databases and drops them at the end.
Without a reachable server the PostgreSQL half is skipped, except under ``CI=true``, where that is
a failure.

A CLI start costs about a second (SQLAlchemy, TA-Lib, exchange-calendars), so tests that only read
share ``filled``: one database per backend filled once per session. Tests that change data
``clone`` it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from needs import unavailable
from sqlalchemy.engine import make_url

from .workspace import AS_OF, SINCE, NewMachine, PostgresServer, Workspace

POSTGRES_URL_ENV = "ENRICHCTL_TEST_POSTGRES_URL"
POSTGRES_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The server the PostgreSQL half runs on; every database it created is dropped at the end."""
    admin_url = os.environ.get(POSTGRES_URL_ENV) or POSTGRES_DEFAULT_URL
    server = PostgresServer(admin_url)
    try:
        server.check()
    except sa.exc.OperationalError as exc:
        where = make_url(admin_url).render_as_string(hide_password=True)
        reason = (f"PostgreSQL at {where} is unreachable ({str(exc.orig).strip().splitlines()[0]}); "
                  f"set {POSTGRES_URL_ENV} to a server where this user may CREATE DATABASE")
        unavailable(reason)
    try:
        yield server
    finally:
        server.drop_all()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """"sqlite" or "postgresql": the suite runs once on each."""
    return request.param


@pytest.fixture(scope="session")
def new_machine(backend: str, request: pytest.FixtureRequest) -> NewMachine:
    """``new_machine(root)``: a clean machine whose database is a new, empty one on ``backend``."""
    if backend == "sqlite":
        return Workspace
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return lambda root: Workspace(root, database=server.create())


@pytest.fixture
def machine(new_machine: NewMachine, tmp_path: Path) -> Workspace:
    """A clean machine with an empty database, on each backend."""
    return new_machine(tmp_path)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A clean machine with no database yet, on enrichctl's default (a SQLite file)."""
    return Workspace(tmp_path)


@pytest.fixture(scope="session")
def filled(new_machine: NewMachine, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """AAPL and MSFT day bars since 2023 as of 5 June 2024, filled once per backend; read it,
    never change it.

    ``filled.results[0]`` is the ``run`` that created it on a fresh machine, typed at a terminal
    with its summary redirected to a file."""
    ws = new_machine(tmp_path_factory.mktemp("filled"))
    result = ws.run_on_terminal("run", "--symbols", "AAPL,MSFT", "--provider", "demo", "--as-of", AS_OF, "--since", SINCE)
    assert result.code == 0, result
    return ws
