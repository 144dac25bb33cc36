"""Opening a database: URLs, the SQLite file and its pragmas, what an open failure says."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from enrichctl.errors import ConfigError
from enrichctl.store import migrate

COLUMN_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def normalise_url(url: str) -> str:
    """Accept the seed's plain ``postgresql://`` and ``sqlite:///`` URLs; use the async drivers."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"invalid database URL {url!r}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ConfigError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str | None) -> Path | None:
    """The file of a SQLite URL as written (relative stays relative); None for another backend,
    an in-memory database, no URL or one that does not parse."""
    if not url or not url.startswith("sqlite"):
        return None
    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    if not database or database == ":memory:":
        return None
    return Path(database)


def sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def indicator_columns_stored(sync: sa.Connection) -> set[str]:
    return {c["name"] for c in sa.inspect(sync).get_columns("indicators")}


def schema_ready(sync: sa.Connection, columns: tuple[str, ...]) -> bool:
    """The schema is at head with every configured indicator column (read only)."""
    if migrate.current_revision(sync) != migrate.HEAD:
        return False
    return set(columns) <= indicator_columns_stored(sync)


def driver_errors(dialect: str) -> tuple[type[BaseException], ...]:
    """The errors of the driver itself, which the bulk paths meet without SQLAlchemy between
    (SQLAlchemy wraps them everywhere else): a StoreError like any other database error."""
    if dialect == "sqlite":
        return (sqlite3.Error,)
    import asyncpg

    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def sqlite_probe(path: Path, public_url: str) -> None:
    """Open the file once with the standard driver first: aiosqlite (0.22) leaves the worker
    thread of a connection that failed to open to report to an event loop that may have closed
    by then, a traceback after the error line. ConfigError naming the cause."""
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the database {public_url}: {exc}{directory_cause(path)}") from None


def directory_cause(path: Path) -> str:
    """Why SQLite cannot open ``path`` when its directory is the reason ("unable to open database
    file" says nothing): it creates its journal files beside the database, so a read-only or
    immutable directory stops it even when the file itself is writable. Empty otherwise."""
    directory = path.parent
    if not directory.is_dir() or os.access(directory, os.W_OK):
        return ""
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return f" (the directory {directory} is on a read-only file system)"
    return (f" (the directory {directory} is not writable: read-only or immutable; SQLite creates "
            f"its journal files beside {path.name})")


def error_unreachable(exc: BaseException) -> bool:
    """The server could not be reached (refused, timed out, name unknown), as opposed to a
    server that answered with an error."""
    if isinstance(exc, OSError):
        return True
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).lower()
    return isinstance(orig, OSError) or any(
        word in text for word in ("connect call failed", "connection refused", "timeout",
                                  "could not connect", "name or service not known")
    )


def url_public(url: str) -> str:
    """The URL as it may be shown: no password, plain scheme."""
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)
