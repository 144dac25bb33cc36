"""Driver and SQLAlchemy errors mapped onto the store's error tree, by what the caller does."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from enrichctl.errors import StoreConflict, StoreError, StoreFault, StoreUnavailable

# SQLite's words for faults no retry mends (a read-only or immutable file or directory, a full
# disk, a damaged file); pysqlite gives them all the same exception classes.
_SQLITE_FAULTS = ("readonly database", "disk is full", "disk i/o error", "unable to open database",
                  "malformed", "not a database", "readonly", "read-only")
# SQLSTATEs of PostgreSQL faults that need a person: disk full, out of memory, read-only
# transaction (a standby). Too many connections (53300) is not one: it passes.
_PG_FAULTS = ("53100", "53200", "25006")
# SQLSTATEs of a lost or refused connection besides class 08 (connection exception): admin
# shutdown (pg_terminate_backend, a restart), crash shutdown, cannot connect now.
_PG_UNAVAILABLE = ("57P01", "57P02", "57P03")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error SQLAlchemy wrapped, and what caused them."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return seen


def store_error(exc: BaseException) -> StoreError:
    """Map a driver or SQLAlchemy error onto the store's error tree, by what the caller does:
    a lost connection passes (75), a read-only file or a full disk needs a person (78), a unique
    constraint means somebody else just wrote the same row."""
    message = f"database error: {error_short(exc)}"
    lost = f"database connection lost: {error_short(exc)}"
    causes = _causes(exc)
    if isinstance(exc, sa.exc.IntegrityError) or any(
        type(e).__name__.endswith("IntegrityError") or _sqlstate(e).startswith("23") for e in causes
    ):
        return StoreConflict(message)
    for e in causes:
        state = _sqlstate(e)
        if state in _PG_FAULTS:
            return StoreFault(message)
        if state[:2] == "08" or state in _PG_UNAVAILABLE:
            return StoreUnavailable(lost)
    if any(isinstance(e, (OSError, sa.exc.DisconnectionError)) or _connection_gone(e) for e in causes):
        return StoreUnavailable(lost)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable(lost)
    text = " ".join(str(e).lower() for e in causes)
    if any(type(e).__module__ == "sqlite3" for e in causes):
        if any(word in text for word in _SQLITE_FAULTS):
            return StoreFault(message)
    return StoreError(message)


def _sqlstate(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else ""


def _connection_gone(exc: BaseException) -> bool:
    """asyncpg's words for a connection that closed under us (no SQLSTATE: nothing answered)."""
    name = type(exc).__name__
    text = str(exc).lower()
    return name in ("ConnectionDoesNotExistError", "ConnectionFailureError") or (
        name == "InterfaceError" and ("connection is closed" in text or "connection was closed" in text)
    ) or "connection was closed in the middle of operation" in text


def error_short(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's statement dump and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.splitlines()[0] if text else type(exc).__name__
