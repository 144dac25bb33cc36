"""Read-only access to the store for research (``enrichctl.open``, the Parquet export): rows
straight into Arrow tables, synchronously, never migrating and never writing.

SQLite is read through ADBC (adbc-driver-sqlite), which fills Arrow columns in C: no Python
object per value, so a million-bar read costs less than a bare ``sqlite3`` fetch. The file is
opened read-only (``mode=ro``) and in autocommit, so a long-lived reader never holds a snapshot
that stops the WAL from being checkpointed or hides a later run's bars. PostgreSQL is read
through the store's own driver (asyncpg) on a private event loop in a thread, in read-only
transactions; a caller inside a running loop (Jupyter) can therefore call every method.

The statements are SQLAlchemy Core over ``tables``, like ``queries``; they live here because
only these readers run them. Results are cast to the Arrow types of the selected columns, so a
column that is NULL in every row still comes back as float64, never as SQLite's guess.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url

from enrichctl.errors import ConfigError, NotFound, StoreError, TemporaryError

# The store's own reading of URLs and driver errors, so both say the same things.
from enrichctl.store.connect import error_unreachable, normalise_url, url_public
from enrichctl.store.faults import error_short
from enrichctl.store.queries import bars as bars_sql
from enrichctl.store.queries import series as series_sql
from enrichctl.store.tables import INDICATOR_KEY, bars, indicators_table, quality_issues

T = TypeVar("T")
# ADBC's SQLite driver infers each column's type from the first batch and fails on a later
# batch of another type (a vwap NULL for the first thousand rows, then REAL). One batch for the
# whole result avoids the guess; the cast to the declared types fixes all-NULL columns.
_ONE_BATCH = {"adbc.sqlite.query.batch_rows": "1000000000"}
_SQLITE = sqlite.dialect(paramstyle="qmark")


def _arrow_type(column: sa.ColumnElement[Any]) -> pa.DataType:
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.Integer):  # BigInteger included
        return pa.int64()
    if isinstance(kind, sa.Float):
        return pa.float64()
    return pa.string()


def schema_of(stmt: sa.Select) -> pa.Schema:
    """The Arrow schema of a statement's result, from the declared column types."""
    return pa.schema([(c.name, _arrow_type(c)) for c in stmt.selected_columns])


class Source(Protocol):
    """One database, read-only. ``table`` runs a SELECT; ``column_names`` lists a table's."""

    backend: str
    where: str  # the database, password hidden, for messages

    def table(self, stmt: sa.Select) -> pa.Table: ...

    def column_names(self, table: str) -> list[str]: ...

    def close(self) -> None: ...


class SqliteSource:
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        import adbc_driver_manager
        import adbc_driver_sqlite.dbapi

        self.where = str(path)
        self._errors = (adbc_driver_manager.Error,)
        if not path.is_file():  # opening it would create an empty database
            raise ConfigError(f"no enrichctl database at {path}: 'enrichctl run' creates and fills it")
        uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
        try:
            self._conn = adbc_driver_sqlite.dbapi.connect(uri, autocommit=True)
        except self._errors as exc:
            raise ConfigError(f"cannot open {path} for reading: {exc}") from None

    def table(self, stmt: sa.Select) -> pa.Table:
        compiled = stmt.compile(dialect=_SQLITE, compile_kwargs={"render_postcompile": True})
        params = [compiled.params[name] for name in compiled.positiontup or ()]
        try:
            with self._conn.cursor() as cursor:
                cursor.adbc_statement.set_options(**_ONE_BATCH)
                cursor.execute(str(compiled), params or None)
                result = cursor.fetch_arrow_table()
        except self._errors as exc:
            raise StoreError(f"cannot read {self.where}: {exc}") from None
        return result.cast(schema_of(stmt)) if result.num_columns else pa.table({}, schema_of(stmt))

    def column_names(self, table: str) -> list[str]:
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(f'PRAGMA table_info("{table}")')  # our own table names only
                return [str(name) for name in cursor.fetch_arrow_table().column("name").to_pylist()]
        except self._errors as exc:
            raise StoreError(f"cannot read {self.where}: {exc}") from None

    def close(self) -> None:
        self._conn.close()


class PostgresSource:
    """asyncpg on a private loop in a daemon thread; each call blocks until its result."""

    backend = "postgresql"

    def __init__(self, url: str) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        async_url = normalise_url(url)
        self.where = url_public(async_url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="enrichctl-reads", daemon=True)
        self._thread.start()
        # NullPool: a reader left open in a notebook holds no idle server connection.
        self._engine = create_async_engine(async_url, poolclass=NullPool)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        except (sa.exc.DBAPIError, OSError) as exc:
            message = f"cannot read {self.where}: {error_short(exc)}"
            if error_unreachable(exc):  # may come back: try later
                raise TemporaryError(message) from None
            raise StoreError(message) from None

    async def _rows(self, stmt: sa.Select) -> list[Sequence[Any]]:
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(postgresql_readonly=True)
            return list((await conn.execute(stmt)).all())

    def table(self, stmt: sa.Select) -> pa.Table:
        schema = schema_of(stmt)
        rows = self._call(self._rows(stmt))
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
        return pa.Table.from_arrays(
            [pa.array(values, type=f.type) for values, f in zip(columns, schema, strict=True)], schema=schema
        )

    def column_names(self, table: str) -> list[str]:
        def names(conn: sa.Connection) -> list[str]:
            try:
                return [col["name"] for col in sa.inspect(conn).get_columns(table)]
            except sa.exc.NoSuchTableError:
                return []

        async def read() -> list[str]:
            async with self._engine.connect() as conn:
                return await conn.run_sync(names)

        return self._call(read())

    def close(self) -> None:
        try:
            self._call(self._engine.dispose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


def source_open(url: str) -> Source:
    """A read-only source for ``url``. ConfigError when the database cannot be opened or holds
    no enrichctl schema (it is left as it is); TemporaryError when the server does not answer."""
    parsed = make_url(normalise_url(url))
    source: Source
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("an in-memory SQLite database holds nothing to read")
        source = SqliteSource(Path(parsed.database))
    else:
        source = PostgresSource(url)
    try:
        schema = all(source.column_names(t) for t in ("bars", "indicators", "series", "quality_issues"))
    except StoreError as exc:
        source.close()
        raise ConfigError(exc.message.replace("cannot read", "cannot open", 1)) from None
    except BaseException:
        source.close()
        raise
    if not schema:
        source.close()
        raise ConfigError(f"{source.where} holds no enrichctl data (no schema): 'enrichctl run' creates and fills it")
    return source


# --- what research reads ------------------------------------------------------------------

BAR_VALUES = ("open", "high", "low", "close", "volume", "vwap", "trades")


class StoreReads:
    """The research reads over one source (a context manager that closes it). Instants are
    UTC epoch ms, bounds inclusive."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._closed = False
        names = source.column_names("indicators")
        self.indicator_names: tuple[str, ...] = tuple(n for n in names if n not in INDICATOR_KEY)
        self._indicators = indicators_table(self.indicator_names)

    def bars_read(
        self, symbol: str, timeframe: str, start: int | None, end: int | None, indicators: bool
    ) -> pa.Table:
        """ts, the bar values and (with ``indicators``) every stored indicator column, by ts.

        Two range scans, aligned here: a join would seek the indicator row of every bar, three
        times slower on SQLite than reading both tables in key order."""
        table = self.source.table(bars_sql.bars_select(symbol, timeframe, start, end))
        if not (indicators and self.indicator_names):
            return table
        ind = self.source.table(bars_sql.indicators_select(self._indicators, symbol, timeframe, start, end))
        ts, ind_ts = table.column("ts"), ind.column("ts")
        # Every bar has its indicator row (one transaction writes both); take() covers the rest.
        index = None if ts.equals(ind_ts) else pc.index_in(ts, value_set=ind_ts)
        for name in self.indicator_names:
            values = ind.column(name)
            table = table.append_column(name, values if index is None else pc.take(values, index))
        return table

    def field_read(
        self, symbols: list[str], timeframe: str, field: str, start: int | None, end: int | None
    ) -> pa.Table:
        """symbol, ts and one bar value or indicator column of several series."""
        if field in BAR_VALUES:
            table = bars
        elif field in self.indicator_names:
            table = self._indicators
        else:
            known = ", ".join((*BAR_VALUES, *self.indicator_names))
            raise NotFound(f"no stored field {field!r}; stored fields: {known}")
        stmt = sa.select(table.c.symbol, table.c.ts, table.c[field]).where(
            table.c.symbol.in_(symbols), table.c.timeframe == timeframe
        )
        if start is not None:
            stmt = stmt.where(table.c.ts >= start)
        if end is not None:
            stmt = stmt.where(table.c.ts <= end)
        return self.source.table(stmt.order_by(table.c.ts))

    def series_read(self, symbol: str | None = None) -> pa.Table:
        return self.source.table(series_sql.series_select(symbol))

    def issues_read(self, symbol: str | None = None) -> pa.Table:
        stmt = sa.select(quality_issues)
        if symbol is not None:
            stmt = stmt.where(quality_issues.c.symbol == symbol)
        return self.source.table(stmt.order_by(quality_issues.c.symbol, quality_issues.c.timeframe,
                                               quality_issues.c.ts, quality_issues.c.id))

    def series_row(self, symbol: str, timeframe: str) -> dict[str, Any]:
        rows = self.source.table(series_sql.series_one(symbol, timeframe)).to_pylist()
        if not rows:
            stored = sorted({f"{r['symbol']}/{r['timeframe']}" for r in self.series_read(symbol).to_pylist()})
            hint = f" (stored: {', '.join(stored)})" if stored else ""
            raise NotFound(f"no stored series {symbol}/{timeframe}{hint}")
        return rows[0]

    def close(self) -> None:
        """Release the connection (and, on PostgreSQL, the reader's thread); idempotent."""
        if not self._closed:
            self._closed = True
            self.source.close()

    def __enter__(self) -> StoreReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reads_open(url: str) -> StoreReads:
    """``StoreReads`` over a read-only source for ``url`` (see ``source_open``); close it."""
    source = source_open(url)
    try:
        return StoreReads(source)
    except BaseException:
        source.close()
        raise


__all__ = ["BAR_VALUES", "Source", "StoreReads", "reads_open", "schema_of", "source_open"]
