"""Migrations: the schema they build is the one tables.py describes, on both backends, and an
upgrade from the previous head keeps every row."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from enrichctl.store import migrate, tables
from enrichctl.store.repo import Store


def _schema_diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    # The indicators table is not in the metadata: its columns follow the configured set.
    return [d for d in diff if "indicators" not in repr(d)]


async def test_migrations_build_exactly_the_described_schema(db):
    store = await Store.open(db.url, ["sma_20"])
    await store.close()
    assert _schema_diff(db.engine) == []
    assert db.scalar("SELECT version_num FROM alembic_version") == migrate.HEAD


async def test_upgrade_from_the_previous_head_keeps_every_row(db):
    with db.engine.begin() as conn:
        migrate.upgrade(conn, "0001")
        conn.execute(sa.text(
            "INSERT INTO runs (id, trigger, status, provider, synthetic, host, pid, started_at, "
            "finished_at, options, jobs_total, jobs_succeeded, jobs_failed, bars_fetched, "
            "bars_written, requests) VALUES (1, 'timer', 'succeeded', 'demo', true, 'h', 1, 10, 20, "
            "'{}', 1, 1, 0, 2, 2, 1)"))
        conn.execute(sa.text(
            "INSERT INTO jobs (id, run_id, symbol, asset_class, status, attempts, bars_fetched, "
            "bars_written, updated_at) VALUES (1, 1, 'AAPL', 'stock', 'succeeded', 1, 2, 2, 20)"))
        conn.execute(sa.text(
            "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, vwap, trades) "
            "VALUES ('AAPL', '1d', 100, 1.5, 2.0, 1.0, 1.75, 1000, 1.6, 10), "
            "('AAPL', '1d', 200, 1.75, 2.5, 1.5, 2.25, 2000, 2.1, 20)"))
        conn.execute(sa.text(
            "INSERT INTO series (symbol, timeframe, asset_class, provider, synthetic, watermark, "
            "first_ts, bar_count, issue_count, updated_at) "
            "VALUES ('AAPL', '1d', 'stock', 'demo', true, 200, 100, 2, 0, 20)"))
    assert db.scalar("SELECT version_num FROM alembic_version") == "0001"

    store = await Store.open(db.url, ["sma_20"])
    await store.close()

    assert db.scalar("SELECT version_num FROM alembic_version") == migrate.HEAD
    assert db.rows("SELECT ts, open, high, low, close, volume, vwap, trades FROM bars ORDER BY ts") == [
        (100, 1.5, 2.0, 1.0, 1.75, 1000.0, 1.6, 10),
        (200, 1.75, 2.5, 1.5, 2.25, 2000.0, 2.1, 20),
    ]
    assert db.rows("SELECT id, status, bars_written FROM runs") == [(1, "succeeded", 2)]
    assert db.rows("SELECT symbol, status, claimed_by FROM jobs") == [("AAPL", "succeeded", None)]
    # Series stored before 0002 count as requested from their first bar.
    assert db.rows("SELECT watermark, first_ts, requested_from FROM series") == [(200, 100, 100)]
    assert _schema_diff(db.engine) == []
