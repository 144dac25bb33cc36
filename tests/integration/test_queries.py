"""Named queries whose SQL is clever enough to deserve a check against the plain version."""

from __future__ import annotations

from enrichctl.domain import AssetClass, Instrument
from enrichctl.store.repo import Store


async def test_latest_job_per_symbol_equals_the_group_by(db):
    store = await Store.open(db.url)
    try:
        symbols = [Instrument(s, AssetClass.STOCK) for s in ("AAPL", "MSFT", "BRK.B", "X:BTCUSD")]
        for _ in range(3):
            run_id = await store.run_create(
                trigger="cli", status="succeeded", provider="demo", synthetic=True, host="h",
                pid=1, started_at=1, options="{}", jobs_total=4, jobs_succeeded=4, jobs_failed=0,
                bars_fetched=0, bars_written=0, requests=0,
            )
            await store.jobs_create(run_id, symbols[: 2 + run_id % 3])
        latest = await store.jobs_latest()
    finally:
        await store.close()
    plain = dict(db.rows("SELECT symbol, max(id) FROM jobs GROUP BY symbol"))
    assert {s: j.id for s, j in latest.items()} == plain
