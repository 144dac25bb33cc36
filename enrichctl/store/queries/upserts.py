"""INSERT ... ON CONFLICT in the dialect's own construct."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(dialect: str, table: sa.Table):
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def upsert(
    dialect: str, table: sa.Table, key: tuple[str, ...], columns: tuple[str, ...] | None = None
) -> sa.Insert:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET every other column (or ``columns``) = excluded."""
    stmt = dialect_insert(dialect, table)
    names = columns if columns is not None else tuple(c.name for c in table.columns)
    return stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={name: stmt.excluded[name] for name in names if name not in key},
    )
