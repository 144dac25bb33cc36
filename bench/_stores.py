"""The databases of ``bench_vs_peer.py``: a fresh SQLite file, or a PostgreSQL database of its
own on the local server (``$ENRICHCTL_TEST_POSTGRES_URL`` or postgres@127.0.0.1:5432), created
and dropped here, and the row counts a run left.

Run as a script so the benchmark's parent never loads a database driver (a child's peak RSS is
read from ``wait4``):

    python bench/_stores.py create NAME     # prints the database's URL
    python bench/_stores.py drop NAME
    python bench/_stores.py count URL       # prints {"bars": n, "indicators": n}
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from urllib.parse import urlsplit, urlunsplit

SERVER_URL = os.environ.get("ENRICHCTL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_url(name: str) -> str:
    parts = urlsplit(SERVER_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin():
    import psycopg2

    conn = psycopg2.connect(SERVER_URL)
    conn.autocommit = True
    return conn


def pg_create(name: str) -> str:
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return pg_url(name)


def pg_drop(name: str) -> None:
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


def counts(url: str) -> dict[str, int]:
    """Rows in ``bars`` and ``indicators`` (the tables both enrichctl and the peer write)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True)
    else:
        import psycopg2

        conn = psycopg2.connect(url)
    try:
        cur = conn.cursor()
        found = {}
        for table in ("bars", "indicators"):
            cur.execute(f"SELECT count(*) FROM {table}")
            found[table] = int(cur.fetchone()[0])
        return found
    finally:
        conn.close()


def main(argv: list[str]) -> None:
    command, arg = argv
    if command == "create":
        print(pg_create(arg))
    elif command == "drop":
        pg_drop(arg)
    elif command == "count":
        print(json.dumps(counts(arg)))
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
