"""Acceptance tests: the installed ``enrichctl`` entry point as a real process (see ``workspace``).

A CLI start costs about a second (SQLAlchemy, TA-Lib, exchange-calendars), so tests that only read
share ``filled``: one database filled once per session. Tests that change data ``clone`` it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .workspace import AS_OF, SINCE, Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A clean machine with no database yet."""
    return Workspace(tmp_path)


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """AAPL and MSFT day bars since 2023 as of 5 June 2024, filled once; read it, never change it.

    ``filled.results[0]`` is the ``run`` that created it on a fresh machine, typed at a terminal
    with its summary redirected to a file."""
    ws = Workspace(tmp_path_factory.mktemp("filled"))
    result = ws.run_on_terminal("run", "--symbols", "AAPL,MSFT", "--provider", "demo", "--as-of", AS_OF, "--since", SINCE)
    assert result.code == 0, result
    return ws
