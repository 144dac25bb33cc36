"""Alembic migrations shipped in the package, applied on a live connection."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions. A test checks it against Alembic's own view; it
# lets an up-to-date database skip importing Alembic (a sixth of a CLI start).
HEAD = "0004"


def _config(connection: sa.Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: sa.Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    return rows[0][0] if len(rows) == 1 else None


# Any fixed 64-bit number; every enrichctl process on a PostgreSQL database uses the same one.
PG_LOCK_KEY = 0x656E72696368  # "enrich"


def lock_schema(connection: sa.Connection) -> None:
    """Make the caller's transaction the only one changing the schema, until it ends.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock now (another process waits for it up to
    its busy timeout) and, since pysqlite/aiosqlite send no BEGIN before DDL by themselves,
    makes every following CREATE/ALTER part of one transaction: a kill leaves the old schema.
    PostgreSQL: DDL is transactional already; a transaction-scoped advisory lock serialises
    simultaneous first starts (otherwise they race on CREATE TABLE / pg_type).
    """
    if connection.dialect.name == "sqlite":
        if not connection.connection.driver_connection.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})


def upgrade(connection: sa.Connection, revision: str = "head") -> None:
    """Bring the schema to ``revision`` atomically; a no-op when it is there already.

    Runs inside the caller's transaction (``engine.begin()``): its commit publishes the new
    schema as a whole, and nothing is left half-built when the process dies before it.
    """
    if revision == "head" and current_revision(connection) == HEAD:
        return
    lock_schema(connection)
    from alembic import command

    # Alembic reads the revision again, now under the lock: a process that waited finds the
    # schema its predecessor built and does nothing.
    command.upgrade(_config(connection), revision)
