"""Statements on the control values, the run lease and the shared rate window."""

from __future__ import annotations

import sqlalchemy as sa

from enrichctl.store.queries.upserts import dialect_insert, upsert
from enrichctl.store.tables import control, leases, rate_events


def control_get(key: str):
    return sa.select(control.c.value, control.c.updated_at).where(control.c.key == key)


def control_put(dialect: str):
    return upsert(dialect, control, ("key",))


def control_delete(key: str):
    return sa.delete(control).where(control.c.key == key)


def lease_claim(dialect: str, now: int, dead_run_id: int | None = None):
    """Take the lease when it is free, expired, or held by a run known to be dead: one atomic
    statement, no read-then-write."""
    stmt = dialect_insert(dialect, leases)
    takeable = leases.c.expires_at < now
    if dead_run_id is not None:
        takeable = takeable | (leases.c.run_id == dead_run_id)
    return stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={c.name: stmt.excluded[c.name] for c in leases.columns if c.name != "name"},
        where=takeable,
    )


def lease_get(name: str):
    return sa.select(leases).where(leases.c.name == name)


def lease_heartbeat(name: str, run_id: int, now: int, expires: int, host: str, pid: int):
    """Renew the lease; it names the worker that renewed it last (any worker of the run)."""
    return (
        sa.update(leases)
        .where(leases.c.name == name, leases.c.run_id == run_id)
        .values(heartbeat_at=now, expires_at=expires, host=host, pid=pid)
    )


def lease_release(name: str, run_id: int):
    return sa.delete(leases).where(leases.c.name == name, leases.c.run_id == run_id)


def rate_window(limiter: str, since: int):
    return (
        sa.select(sa.func.count(), sa.func.min(rate_events.c.at))
        .where(rate_events.c.limiter == limiter, rate_events.c.at > since)
    )


def rate_prune(limiter: str, before: int):
    return sa.delete(rate_events).where(rate_events.c.limiter == limiter, rate_events.c.at <= before)


def rate_admit(limiter: str, at: int):
    return sa.insert(rate_events).values(limiter=limiter, at=at)
