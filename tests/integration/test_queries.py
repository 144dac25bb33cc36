"""Named queries whose SQL is clever enough to deserve a check against the plain version."""

from __future__ import annotations

from enrichctl import service
from enrichctl.domain import AssetClass, Instrument, Series, Timeframe
from enrichctl.service import RunOptions
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


async def test_overlap_starts_of_many_series_equal_each_series_tail(db):
    settings = db.settings(["AAPL", "MSFT"], timeframes=("1d", "1h"))
    await service.run(settings, RunOptions())
    store = await Store.open(db.url)
    try:
        stored = [Series(r.symbol, AssetClass(r.asset_class), Timeframe(r.timeframe))
                  for r in await store.series_list()]
        absent = Series("NONE", AssetClass.STOCK, Timeframe.D1)
        for n in (1, 3, 10**6):
            starts = await store.series_overlap_starts([*stored, absent], n)
            tails = {s: await store.bars_tail(s, n) for s in stored}
            assert starts == {**{s: int(t.ts[0]) for s, t in tails.items()}, absent: None}
        assert await store.series_overlap_starts(stored, 0) == dict.fromkeys(stored)
    finally:
        await store.close()
    assert len(stored) == 4
