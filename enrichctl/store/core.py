"""The transactions every part of ``Store`` runs its statements in, and the driver paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from enrichctl.errors import StoreLost
from enrichctl.store.faults import store_error
from enrichctl.store.queries import driver as raw_sql
from enrichctl.store.tables import INDICATOR_KEY


class StoreCore:
    """Connections and transactions of a ``Store``; its other bases run their SQL through them."""

    engine: AsyncEngine
    dialect: str
    indicators: sa.Table
    _write_lock: asyncio.Lock | None
    _errors: tuple[type[BaseException], ...]
    _file: tuple[Path, int, int] | None

    def _file_check(self) -> None:
        """Raise ``StoreLost`` when the path no longer names the file we opened: a commit
        would go to a file nobody will read again (deleted with its directory, replaced)."""
        if self._file is None:
            return
        path, dev, ino = self._file
        try:
            now = path.stat()
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (dev, ino):
            raise StoreLost(f"the database file {path} was removed or replaced while enrichctl "
                            "had it open; what this run wrote since then is not in it")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except self._errors as exc:
            raise store_error(exc) from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; the first statement should write (no read-then-upgrade on SQLite)."""
        try:
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._write_lock, self.engine.begin() as conn:
                    yield conn
                    self._file_check()  # before the commit: a lost file takes no more writes
        except self._errors as exc:
            raise store_error(exc) from exc

    async def _bulk_upsert(
        self, conn: AsyncConnection, table: str, columns: tuple[str, ...], rows: list[tuple]
    ) -> None:
        """Upsert positional ``rows`` (of ``columns``) straight through the driver, inside the
        transaction of ``conn``: SQLite gets one ``executemany`` on its own connection (one hop
        to aiosqlite's thread for the whole batch), PostgreSQL one COPY into a staging table and
        one INSERT ... ON CONFLICT from it."""
        if not rows:
            return
        raw = (await conn.get_raw_connection()).driver_connection
        if self.dialect == "sqlite":
            cursor = await raw.executemany(raw_sql.bulk_upsert_sqlite(table, INDICATOR_KEY, columns), rows)
            await cursor.close()
            return
        types = {c: "double precision" for c in columns} | {
            "symbol": "text", "timeframe": "text", "ts": "bigint", "trades": "bigint"}
        await raw.execute(raw_sql.staging_create(table, columns, types))
        await raw.copy_records_to_table(raw_sql.staging_name(table, columns), records=rows,
                                        columns=list(columns))
        await raw.execute(raw_sql.staging_upsert(table, INDICATOR_KEY, columns))

    async def _driver(self, conn: AsyncConnection, sql: str, params: list | tuple = (),
                      many: bool = False) -> list[tuple]:
        """One statement (``?`` placeholders; ``many``: a list of parameter rows) straight
        through the driver, inside the transaction of ``conn``: one hop to aiosqlite's thread
        where SQLAlchemy's adapter takes several. Returns the rows it gives."""
        raw = (await conn.get_raw_connection()).driver_connection
        sql = raw_sql.driver_sql(self.dialect, sql)
        if self.dialect == "sqlite":
            if many:
                await (await raw.executemany(sql, params)).close()
                return []
            return list(await raw.execute_fetchall(sql, params))
        if not raw.is_in_transaction():
            # SQLAlchemy's asyncpg adapter begins its transaction with its first statement.
            await conn.execute(sa.text("SELECT 1"))
        if many:
            await raw.executemany(sql, params)
            return []
        return [tuple(r) for r in await raw.fetch(sql, *params)]

    async def _driver_grouped(
        self, conn: AsyncConnection, table: sa.Table, rows: list[tuple[tuple[str, ...], list]],
        key: tuple[str, ...] = (),
    ) -> None:
        """INSERT (or, with ``key``, upsert) (columns, parameters) rows: one executemany per
        column list."""
        for columns in dict.fromkeys(cols for cols, _ in rows):
            await self._driver(conn, raw_sql.row_insert_sql(table, columns, key),
                               [params for cols, params in rows if cols == columns], many=True)
