"""Driver errors sorted by what the caller does (``repo.store_error``): a lost connection is
'try later' (75), a fault no retry mends needs a person (78), a busy database stays a plain
retryable StoreError, and a unique violation is a conflict (somebody wrote the same row)."""

from __future__ import annotations

import socket
import sqlite3

import asyncpg
import pytest
import sqlalchemy as sa

from enrichctl.errors import (
    EXIT_CONFIG,
    EXIT_TEMPFAIL,
    StoreConflict,
    StoreError,
    StoreFault,
    StoreUnavailable,
)
from enrichctl.store.repo import store_error


def _wrapped(orig: BaseException) -> sa.exc.DBAPIError:
    """As SQLAlchemy hands a driver error over."""
    return sa.exc.DBAPIError.instance("UPDATE workers SET ...", {}, orig, Exception)


@pytest.mark.parametrize("orig", [
    socket.gaierror(-2, "Name or service not known"),
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    ConnectionResetError(104, "Connection reset by peer"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
], ids=["dns", "refused", "reset", "terminated", "dropped", "starting-up"])
def test_a_lost_connection_is_try_later(orig: BaseException) -> None:
    for exc in (orig, _wrapped(orig)):
        error = store_error(exc)
        assert isinstance(error, StoreUnavailable) and error.exit_code == EXIT_TEMPFAIL, exc
        assert error.message.startswith("database connection lost: ")


@pytest.mark.parametrize("orig", [
    sqlite3.OperationalError("attempt to write a readonly database"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("disk I/O error"),
    sqlite3.DatabaseError("database disk image is malformed"),
    asyncpg.exceptions.DiskFullError("could not extend file: No space left on device"),
    asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
], ids=["readonly", "full", "io", "malformed", "pg-full", "pg-standby"])
def test_a_permanent_fault_needs_a_person(orig: BaseException) -> None:
    error = store_error(_wrapped(orig))
    assert isinstance(error, StoreFault) and error.exit_code == EXIT_CONFIG
    assert str(orig).splitlines()[0] in error.message


def test_a_unique_violation_is_a_conflict_and_a_busy_database_is_plain() -> None:
    conflict = sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: runs.status"))
    assert isinstance(store_error(conflict), StoreConflict)
    assert isinstance(store_error(_wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key"))), StoreConflict)
    busy = store_error(_wrapped(sqlite3.OperationalError("database is locked")))
    assert type(busy) is StoreError and busy.exit_code == 1
