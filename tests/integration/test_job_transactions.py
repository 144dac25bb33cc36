"""What a job costs the database: a daily update commits each stock's job in few transactions
(the claim starts the attempt; the series' commit carries the job's end), on both backends.
Commits are counted with SQLAlchemy's own ``commit`` event on every engine of the process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from fake_polygon import FakePolygon
from test_polygon_grouped import AS_OF, LATER, SERIES, hold_market, settings_for

from enrichctl import service
from enrichctl.errors import EXIT_OK

# The run's own bookkeeping (run row, lease, jobs, worker, corporate actions, the end): 14-15,
# and a lease heartbeat or two on a slow machine.
RUN_COMMITS = 16


@pytest.fixture
async def fake():
    from test_polygon_grouped import KEY

    async with FakePolygon(api_key=KEY, page_size=5000) as server:
        yield server


@contextmanager
def commits_counted() -> Iterator[list[int]]:
    """[commits so far] of every SQLAlchemy engine in this process."""
    count = [0]

    def on_commit(_conn) -> None:
        count[0] += 1

    sa.event.listen(sa.engine.Engine, "commit", on_commit)
    try:
        yield count
    finally:
        sa.event.remove(sa.engine.Engine, "commit", on_commit)


async def test_a_daily_update_commits_each_job_in_at_most_two_transactions(fake, db):
    settings = settings_for(fake, db.url)
    await hold_market(fake, AS_OF)
    assert service.exit_code_of(await service.run(settings, service.RunOptions(as_of=AS_OF))) == EXIT_OK
    await hold_market(fake, LATER)

    with commits_counted() as commits:
        update = await service.run(settings, service.RunOptions(as_of=LATER))
    assert service.exit_code_of(update) == EXIT_OK, update.doc()
    jobs = db.dicts("SELECT status, attempts FROM jobs WHERE run_id = :r", r=update.run_id)
    assert [(j["status"], j["attempts"]) for j in jobs] == [("succeeded", 1)] * len(SERIES)
    assert db.scalar("SELECT count(*) FROM tasks WHERE run_id = :r", r=update.run_id) == len(SERIES)
    # Before: four per job (claim, running, the series' commit, the job's end): 66 here.
    assert commits[0] <= 2 * len(SERIES) + RUN_COMMITS, commits[0]
