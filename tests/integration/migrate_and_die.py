"""Child process for test_migration_kills: open the store (which migrates) and SIGKILL itself
just before SQL statement number ``argv[3]`` reaches the database.

    python migrate_and_die.py URL REVISION N     # REVISION: "head" or a revision to stop at
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import sqlalchemy as sa

from enrichctl.store import migrate
from enrichctl.store.repo import Store, normalise_url


def main() -> None:
    url, revision, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    count = 0

    def before(*_args) -> None:
        nonlocal count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    if revision == "head":
        asyncio.run(_open(url))
    else:
        engine = sa.create_engine(normalise_url(url).replace("+aiosqlite", "").replace(
            "+asyncpg", "+psycopg2"))
        with engine.begin() as conn:
            migrate.upgrade(conn, revision)
    print(count)  # statements in all: the test's range of kill instants


async def _open(url: str) -> None:
    store = await Store.open(url, ["sma_20", "rsi_14"])
    await store.close()


if __name__ == "__main__":
    main()
