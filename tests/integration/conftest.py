"""Integration fixtures: a real SQLite file or a real PostgreSQL database per test, settings no
developer environment leaks into, and a way to run the real pipeline with a fake provider.

PostgreSQL comes from ``$ENRICHCTL_TEST_POSTGRES_URL`` or the local server (trust auth). The
session creates its own databases (``enrichctl_test_<random>_<name>``) and drops them at the end;
each test gets an empty ``public`` schema. Without a reachable server the PostgreSQL cases are
skipped, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from needs import unavailable
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from enrichctl import service
from enrichctl.calendar import SessionCalendar
from enrichctl.domain import BAR_FIELDS, Bars, Series
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.providers.base import Provider, RequestSink
from enrichctl.settings import Settings
from enrichctl.store.tables import INDICATOR_KEY

POSTGRES_URL_ENV = "ENRICHCTL_TEST_POSTGRES_URL"
POSTGRES_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Read once at import: the per-test environment clean-up removes every ENRICHCTL_* variable.
POSTGRES_ADMIN_URL = os.environ.get(POSTGRES_URL_ENV) or POSTGRES_DEFAULT_URL

# Short histories keep a run at a few thousand bars.
HISTORY_DAYS = {"1d": 400, "1h": 20}

_LEAKY_ENV = ("DATABASE_URL", "POLYGON_API_KEY", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ENRICHCTL_*/DATABASE_URL/key or config file of the developer reaches a test."""
    for name in list(os.environ):
        if name.startswith("ENRICHCTL_") or name in _LEAKY_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


# --- databases ------------------------------------------------------------------------------


@dataclass
class Database:
    """One empty database: ``url`` is what enrichctl is given; ``rows`` reads it back through
    an independent synchronous driver (sqlite3 / psycopg2)."""

    backend: str  # "sqlite" | "postgresql"
    url: str
    sync_url: str
    _engine: sa.Engine | None = field(default=None, repr=False)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            # NullPool: no connection outlives a query, so a schema reset never waits on us.
            self._engine = sa.create_engine(self.sync_url, poolclass=NullPool)
        return self._engine

    def rows(self, sql: str, **params: Any) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]

    def dicts(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params).all()]

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def bars(self, series: Series) -> Bars:
        return Bars.from_rows(
            self.rows(
                f"SELECT {', '.join(BAR_FIELDS)} FROM bars WHERE symbol = :s AND timeframe = :t "
                "ORDER BY ts",
                s=series.symbol, t=series.timeframe.value,
            )
        )

    def indicators(self, series: Series) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(ts, {column: values}) of the stored indicator rows, NULL as NaN."""
        rows = self.dicts(
            "SELECT * FROM indicators WHERE symbol = :s AND timeframe = :t ORDER BY ts",
            s=series.symbol, t=series.timeframe.value,
        )
        names = [c["name"] for c in sa.inspect(self.engine).get_columns("indicators")
                 if c["name"] not in INDICATOR_KEY]
        ts = np.array([r["ts"] for r in rows], dtype=np.int64)
        return ts, {
            n: np.array([np.nan if r[n] is None else r[n] for r in rows], dtype=np.float64)
            for n in names
        }

    def table(self, name: str, order_by: str) -> list[tuple]:
        return self.rows(f"SELECT * FROM {name} ORDER BY {order_by}")

    def settings(self, symbols: list[str], **overrides: Any) -> Settings:
        """Demo-provider settings for ``symbols`` on this database; overrides win, as flags do."""
        values: dict[str, Any] = {
            "database_url": self.url,
            "provider": "demo",
            "universe": [{"symbol": s} for s in symbols],
            "timeframes": ("1d",),
            "history_days": HISTORY_DAYS,
            "retry_delay_seconds": 0.0,
            **overrides,
        }
        return Settings(**values)

    def assert_indicators_are_full_compute(self, settings: Settings, series: Series) -> None:
        """The stored indicator rows equal TA-Lib over the whole stored series (1e-9 relative)."""
        bars = self.bars(series)
        ts, stored = self.indicators(series)
        assert len(bars), f"{series}: no stored bars"
        assert np.array_equal(ts, bars.ts), f"{series}: indicator rows do not line up with the bars"
        expected = IndicatorSet(settings.indicators).compute(
            bars, series.timeframe.periods_per_year(series.asset_class)
        )
        diff, where = indicator_diff(expected, stored)
        assert diff <= 1e-9, f"{series}: stored indicators differ from a full compute by {diff} ({where})"

    def assert_same_series(self, other: Database, series: Series) -> None:
        """Both databases hold the same bars and (within 1e-9) the same indicators."""
        mine, theirs = self.bars(series), other.bars(series)
        assert len(mine) and bars_equal(mine, theirs), f"{series}: stored bars differ"
        ts_a, values_a = self.indicators(series)
        ts_b, values_b = other.indicators(series)
        assert np.array_equal(ts_a, ts_b), f"{series}: indicator rows differ"
        diff, where = indicator_diff(values_b, values_a)
        assert diff <= 1e-9, f"{series}: indicators differ by {diff} ({where})"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class PostgresServer:
    """The session's PostgreSQL databases, created on first use and dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.prefix = f"enrichctl_test_{secrets.token_hex(4)}"
        self._created: list[str] = []
        self._admin = sa.create_engine(
            self.admin_url.set(drivername="postgresql+psycopg2"),
            poolclass=NullPool, isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 3},
        )

    def check(self) -> None:
        with self._admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def database(self, name: str) -> Database:
        """The database ``name`` of this session with an empty ``public`` schema."""
        db_name = f"{self.prefix}_{name}"
        url = self.admin_url.set(database=db_name)
        sync_url = url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
        if db_name not in self._created:
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
            self._created.append(db_name)
        else:
            reset = sa.create_engine(sync_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            try:
                with reset.connect() as conn:
                    conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                    conn.execute(sa.text("CREATE SCHEMA public"))
            finally:
                reset.dispose()
        plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return Database("postgresql", plain, sync_url)

    def drop_all(self) -> None:
        with self._admin.connect() as conn:
            for db_name in self._created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(POSTGRES_ADMIN_URL)
    try:
        server.check()
    except sa.exc.OperationalError as exc:
        where = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)
        reason = (f"PostgreSQL at {where} is unreachable ({str(exc.orig).strip().splitlines()[0]}); "
                  f"set {POSTGRES_URL_ENV} to a server where this user may CREATE DATABASE")
        unavailable(reason)
    try:
        yield server
    finally:
        server.drop_all()


def _empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Database:
    if backend == "sqlite":
        path = tmp_path / f"{name}.db"
        return Database("sqlite", f"sqlite:///{path}", f"sqlite:///{path}")
    return request.getfixturevalue("postgres_server").database(name)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database, once on each backend."""
    database = _empty_database(request.param, request, tmp_path, "main")
    yield database
    database.close()


@pytest.fixture
def other_db(request: pytest.FixtureRequest, db: Database, tmp_path: Path) -> Iterator[Database]:
    """A second empty database on the same backend as ``db``."""
    database = _empty_database(db.backend, request, tmp_path, "other")
    yield database
    database.close()


# --- runs -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def calendar() -> SessionCalendar:
    return SessionCalendar()


ProviderFactory = Callable[[SessionCalendar, RequestSink, Callable[[], int]], Provider]


async def _run_with_provider(
    settings: Settings, options: service.RunOptions, make_provider: ProviderFactory
) -> service.RunReport:
    """``service.run`` with a fake provider in place of the configured one."""
    return await service.run(settings, options, provider_factory=make_provider)


# --- comparisons ----------------------------------------------------------------------------


def bars_equal(a: Bars, b: Bars) -> bool:
    """Same timestamps and the same values (NaN where the other has NaN)."""
    return len(a) == len(b) and all(
        np.array_equal(getattr(a, n), getattr(b, n), equal_nan=n != "ts") for n in BAR_FIELDS
    )


def indicator_diff(expected: dict[str, np.ndarray], stored: dict[str, np.ndarray]) -> tuple[float, str]:
    """The largest relative difference over every expected column (inf where NaN positions
    differ or a column is missing), and where it is."""
    worst, where = 0.0, ""
    for name, want in expected.items():
        have = stored.get(name)
        if have is None or have.shape != want.shape:
            return math.inf, f"{name}: missing or of another length"
        nan_mismatch = np.isnan(want) != np.isnan(have)
        if nan_mismatch.any():
            return math.inf, f"{name}: NaN at index {int(np.argmax(nan_mismatch))} on one side only"
        both = ~np.isnan(want)
        if not both.any():
            continue
        scale = np.maximum(np.maximum(np.abs(want[both]), np.abs(have[both])), 1e-300)
        rel = np.abs(want[both] - have[both]) / scale
        i = int(np.argmax(rel))
        if rel[i] > worst:
            worst, where = float(rel[i]), f"{name} at index {int(np.flatnonzero(both)[i])}"
    return worst, where


@pytest.fixture
def run_with_provider() -> Callable[..., Any]:
    """``await run_with_provider(settings, options, make_provider)``: see ``_run_with_provider``."""
    return _run_with_provider
