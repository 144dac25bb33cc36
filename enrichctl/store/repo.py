"""The store: the only place that executes SQL. Async SQLAlchemy Core on SQLite or PostgreSQL.

Writes of one series (bars, indicators, quality issues, the watermark) happen in ONE
transaction, so a crash leaves either all of them or none.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from enrichctl.errors import ConfigError, StoreDamaged, TemporaryError
from enrichctl.store import migrate
from enrichctl.store.bars import BarReads
from enrichctl.store.connect import (
    COLUMN_RE,
    directory_cause,
    driver_errors,
    error_unreachable,
    indicator_columns_stored,
    normalise_url,
    schema_ready,
    sqlite_path,
    sqlite_pragmas,
    sqlite_probe,
    url_public,
)
from enrichctl.store.coordination import Coordination
from enrichctl.store.faults import error_short, store_error
from enrichctl.store.groupcommit import GroupCommit
from enrichctl.store.issues import IssueRecords
from enrichctl.store.metrics import MetricsReads
from enrichctl.store.records import RunRecords
from enrichctl.store.reference import ReferenceStore
from enrichctl.store.series import SeriesRecords
from enrichctl.store.tables import indicators_table
from enrichctl.store.writes import Commit, JobEnd, SeriesWrite, SeriesWrites, series_consistency

# Names callers import from here.
__all__ = ["JobEnd", "SeriesWrite", "Store", "normalise_url", "series_consistency", "sqlite_path", "store_error"]


def _to_completion(method):
    """Run a store operation to its end even when the caller is cancelled, then re-raise.

    Cancelling an aiosqlite call halfway leaves the write lock held or a SQLite transaction
    open, and the stop that cancelled it (SIGTERM) then hangs on its own bookkeeping. Each
    operation takes milliseconds, so finishing it keeps stops prompt."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        task = asyncio.ensure_future(method(*args, **kwargs))
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(task)
                break
            except asyncio.CancelledError:
                if task.done():
                    raise
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        return result

    return wrapper


class Store(SeriesWrites, BarReads, SeriesRecords, IssueRecords, RunRecords, MetricsReads,
            Coordination, ReferenceStore):
    """Open with ``await Store.open(url, indicator_columns)``; close with ``await store.close()``.

    Every public operation runs to completion once started (see ``_to_completion``)."""

    def __init__(self, engine: AsyncEngine, indicator_columns: tuple[str, ...]) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.indicators = indicators_table(indicator_columns)
        self.schema_current = True
        # SQLite has one writer at a time; queue our own writers here instead of in busy-wait.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._errors = (SQLAlchemyError, *driver_errors(self.dialect))
        # The SQLite file as opened: (path, device, inode), checked before every commit.
        self._file: tuple[Path, int, int] | None = None
        self._commits: GroupCommit[Commit, int] = GroupCommit(self._commit_many)

    @classmethod
    async def open(
        cls, url: str, indicator_columns: Iterable[str] = (), *, pool_size: int = 5,
        migrate: bool = True,
    ) -> Store:
        """Connect, create the SQLite directory, apply migrations, add indicator columns."""
        async_url = normalise_url(url)
        kwargs: dict[str, Any] = {}
        if async_url.startswith("sqlite"):
            path = sqlite_path(async_url)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot create the database directory {path.parent}: {exc.strerror}"
                    ) from None
                sqlite_probe(path, url_public(async_url))
            kwargs["connect_args"] = {"timeout": 30}
            # Connection.close() has rolled back already: a second rollback on return to the
            # pool would be one more round trip to aiosqlite's thread for every use.
            kwargs["pool_reset_on_return"] = None
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        engine = create_async_engine(async_url, **kwargs)
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        columns = tuple(indicator_columns)
        for name in columns:
            if not COLUMN_RE.match(name):
                raise ConfigError(f"invalid indicator column name {name!r}")
        store = cls(engine, columns)
        try:
            await store._prepare(columns, migrate)
        except (DBAPIError, OSError) as exc:
            await engine.dispose()
            message = f"cannot open the database {url_public(async_url)}: {error_short(exc)}"
            if (path := sqlite_path(async_url) if engine.dialect.name == "sqlite" else None) is not None:
                message += directory_cause(path)
            # A server that does not answer may come back (75); a SQLite file we cannot open, or
            # a server that refuses our credentials or database name, needs a person (78).
            if engine.dialect.name == "postgresql" and error_unreachable(exc):
                raise TemporaryError(message) from None
            raise ConfigError(message) from None
        except BaseException:
            await engine.dispose()
            raise
        path = sqlite_path(async_url) if store.dialect == "sqlite" else None
        if path is not None and migrate:
            opened = path.stat()
            store._file = (path, opened.st_dev, opened.st_ino)
        return store

    async def _prepare(self, columns: tuple[str, ...], upgrade: bool) -> None:
        """Migrate and add indicator columns; with ``upgrade`` False (a dry run) change nothing
        and only note whether the schema is current (``schema_current``)."""
        if not upgrade:
            async with self.engine.connect() as conn:
                self.schema_current = await conn.run_sync(migrate.current_revision) == migrate.HEAD
            return
        async with self.engine.connect() as conn:
            if await conn.run_sync(schema_ready, columns):
                return
        # One transaction under the schema lock: a kill leaves the old schema, a process that
        # started at the same moment waits and then finds everything done.
        async with self.engine.begin() as conn:
            await conn.run_sync(migrate.lock_schema)
            await conn.run_sync(migrate.upgrade)
            existing = await conn.run_sync(indicator_columns_stored)
            for name in columns:
                if name not in existing:
                    # Validated against COLUMN_RE above: safe to interpolate.
                    await conn.exec_driver_sql(
                        f"ALTER TABLE indicators ADD COLUMN {name} DOUBLE PRECISION"
                    )

    async def close(self) -> None:
        await self.engine.dispose()

    async def integrity_check(self) -> None:
        """Raise ``StoreDamaged`` when SQLite's ``PRAGMA quick_check`` finds the file damaged
        (it reads every page: a page overwritten with garbage does not pass). PostgreSQL checks
        its own pages as it reads them; nothing to do there."""
        if self.dialect != "sqlite":
            return
        where = sqlite_path(str(self.engine.url)) or "in memory"
        try:
            async with self.engine.connect() as conn:
                found = [r[0] for r in (await conn.exec_driver_sql("PRAGMA quick_check(3)")).all()]
        except self._errors as exc:  # damage that stops the check itself
            found = [error_short(exc)]
        if found != ["ok"]:
            problems = "; ".join(str(f).replace("\n", " ") for f in found)
            raise StoreDamaged(f"the database file {where} is damaged (quick_check: {problems})")


for _name in dir(Store):
    _member = getattr(Store, _name)
    if inspect.iscoroutinefunction(_member) and not _name.startswith("_") and _name != "open":
        setattr(Store, _name, _to_completion(_member))
