"""Plain SQL text for the driver paths (``StoreCore._bulk_upsert``, ``_driver``)."""

from __future__ import annotations

import zlib

import sqlalchemy as sa

# Plain SQL text: bulk rows go to the driver as they are, without SQLAlchemy's per-statement
# and per-row work. Table and column names come from tables.py or passed COLUMN_RE.


def bulk_upsert_sqlite(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """INSERT of ``columns`` (positional ``?``), ON CONFLICT (key) DO UPDATE the others."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


def staging_name(table: str, columns: tuple[str, ...]) -> str:
    """A session-local table for COPY into ``table``: one per column list (PostgreSQL)."""
    return f"staging_{table}_{zlib.crc32(','.join(columns).encode()):08x}"


def staging_create(table: str, columns: tuple[str, ...], types: dict[str, str]) -> str:
    """Created once per connection; its rows vanish at the end of every transaction."""
    defs = ", ".join(f"{c} {types[c]}" for c in columns)
    return (f"CREATE TEMP TABLE IF NOT EXISTS {staging_name(table, columns)} ({defs}) "
            "ON COMMIT DELETE ROWS")


def staging_upsert(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """Move the staged rows into ``table``: one INSERT ... ON CONFLICT for the whole batch."""
    cols = ", ".join(columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging_name(table, columns)} "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


# Written with ``?`` placeholders; ``driver_sql`` numbers them for asyncpg. Each statement is
# one hop to the driver where SQLAlchemy's async adapter takes several: a daily update commits
# thousands of series of a few rows each.


def driver_sql(dialect: str, sql: str) -> str:
    """``sql`` with the placeholders of ``dialect``'s driver (``?``, or ``$1, $2...``)."""
    if dialect != "postgresql":
        return sql
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


def row_insert_sql(table: sa.Table, columns: tuple[str, ...], key: tuple[str, ...] = ()) -> str:
    """INSERT of ``columns``; with ``key``, ON CONFLICT (key) DO UPDATE every other column."""
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' * len(columns))})")
    if key:
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
        sql += f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    return sql


def row_values(table: sa.Table, values: dict, every: bool = False) -> tuple[tuple[str, ...], list]:
    """(columns, parameters) of an INSERT of ``values`` as SQLAlchemy would make it: the columns
    given plus those with a scalar default; with ``every``, each column of the table (NULL when
    neither), as an upsert that sets every column needs."""
    columns, params = [], []
    for column in table.columns:
        name = column.name
        if name in values:
            columns.append(name)
            params.append(values[name])
        elif column.default is not None and column.default.is_scalar:
            columns.append(name)
            params.append(column.default.arg)
        elif every and not column.primary_key:
            columns.append(name)
            params.append(None)
    return tuple(columns), params


def bars_stats_sql() -> str:
    """(count, first ts, last ts) of one series' bars (symbol, timeframe)."""
    return "SELECT count(*), min(ts), max(ts) FROM bars WHERE symbol = ? AND timeframe = ?"


def bars_ts_sql(bounded: bool) -> str:
    """The bar starts of one series (symbol, timeframe[, first, last]), oldest first."""
    where = " AND ts >= ? AND ts <= ?" if bounded else ""
    return f"SELECT ts FROM bars WHERE symbol = ? AND timeframe = ?{where} ORDER BY ts"


def job_update_claimed_sql(columns: tuple[str, ...]) -> str:
    """``job_update_claimed`` of ``columns``, then the job id and the worker."""
    sets = ", ".join(f"{c} = ?" for c in columns)
    return f"UPDATE jobs SET {sets} WHERE id = ? AND claimed_by = ?"


def bars_select_sql(dialect: str, start: int | None, end: int | None, before: int | None = None,
                    newest: int | None = None) -> str:
    """The bars of one series (symbol, timeframe, then the bounds given, in that order as
    parameters) as (ts, open, high, low, close, volume, vwap, trades): oldest first, or the
    ``newest`` last ones newest first."""
    where = ["symbol = ?", "timeframe = ?"]
    where += [cond for cond, bound in (("ts >= ?", start), ("ts <= ?", end), ("ts < ?", before))
              if bound is not None]
    sql = (f"SELECT ts, open, high, low, close, volume, vwap, trades FROM bars "
           f"WHERE {' AND '.join(where)} ORDER BY ts")
    if newest is not None:
        sql += f" DESC LIMIT {int(newest)}"
    return driver_sql(dialect, sql)
