"""The bulkhead: a bounded number of calls in flight, a bounded wait, and no slot ever lost."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from fakeclock import FakeClock

from enrichctl.errors import RetryableProviderError, TemporaryError
from enrichctl.resilience.bulkhead import Bulkhead, BulkheadFull
from enrichctl.resilience.clock import SystemClock


async def test_a_thousand_mixed_outcomes_leave_every_slot_free_and_never_exceed_the_limit() -> None:
    clock = FakeClock()
    rng = random.Random(3)
    bulkhead = Bulkhead("polygon", clock, max_concurrent=4, timeout=5.0)
    in_flight = 0
    peak = 0

    async def request(kind: str) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await clock.sleep(rng.uniform(0.0, 4.0))
            if kind == "error":
                raise RetryableProviderError("HTTP 500", status=500)
            return "ok"
        finally:
            in_flight -= 1

    async def caller(kind: str) -> str:
        await clock.sleep(rng.uniform(0.0, 200.0))  # ~5 arrivals/s against ~2 served/s: queues form
        return await bulkhead.call(lambda: request(kind))

    kinds = [rng.choice(["ok", "ok", "error", "cancel"]) for _ in range(1000)]
    tasks = [asyncio.ensure_future(caller(kind)) for kind in kinds]

    async def cancel_later(task: asyncio.Future[str]) -> None:
        await clock.sleep(rng.uniform(0.0, 210.0))
        task.cancel()

    cancellers = [cancel_later(t) for t, kind in zip(tasks, kinds, strict=True) if kind == "cancel"]
    await asyncio.gather(*cancellers)
    results = await asyncio.gather(*tasks, return_exceptions=True)

    seen = Counter(type(r).__name__ if isinstance(r, BaseException) else r for r in results)
    assert {"ok", "RetryableProviderError", "CancelledError", "BulkheadFull"} <= set(seen)
    assert peak == 4
    snap = bulkhead.snapshot()
    assert (snap["in_flight"], snap["waiting"], snap["peak_in_flight"]) == (0, 0, 4)
    assert snap["rejected"] == seen["BulkheadFull"]
    # Every slot really is free: four callers get in at once without waiting.
    before = clock.monotonic()
    for _ in range(4):
        await bulkhead.acquire()
    assert clock.monotonic() == before


async def test_waiting_longer_than_the_timeout_raises_bulkhead_full() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    bulkhead = Bulkhead("polygon", clock, max_concurrent=1, timeout=7.5)
    await bulkhead.acquire()
    with pytest.raises(BulkheadFull) as raised:
        await bulkhead.acquire()
    assert isinstance(raised.value, TemporaryError)
    assert clock.monotonic() - start == 7.5
    assert "7.5 s" in str(raised.value)
    assert bulkhead.snapshot()["waiting"] == 0


async def test_a_freed_slot_goes_to_the_first_waiter_not_a_newcomer() -> None:
    clock = FakeClock(auto_advance=False)
    bulkhead = Bulkhead("p", clock, max_concurrent=1, timeout=60.0)
    await bulkhead.acquire()
    first = asyncio.ensure_future(bulkhead.acquire())
    await asyncio.sleep(0)
    bulkhead.release()
    newcomer = asyncio.ensure_future(bulkhead.acquire())  # arrives before `first` has run again
    await asyncio.sleep(0)
    assert first.done() and not newcomer.done()
    assert bulkhead.snapshot()["in_flight"] == 1
    bulkhead.release()
    await newcomer
    bulkhead.release()
    assert bulkhead.snapshot()["in_flight"] == 0


async def test_a_cancelled_waiter_takes_no_slot_and_the_next_waiter_gets_it() -> None:
    clock = FakeClock(auto_advance=False)
    bulkhead = Bulkhead("p", clock, max_concurrent=1, timeout=60.0)
    await bulkhead.acquire()
    gone = asyncio.ensure_future(bulkhead.acquire())
    await asyncio.sleep(0)
    stays = asyncio.ensure_future(bulkhead.acquire())
    await asyncio.sleep(0)
    assert bulkhead.snapshot()["waiting"] == 2
    gone.cancel()
    bulkhead.release()  # in the same tick: the slot must skip the cancelled waiter
    await stays
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert bulkhead.snapshot()["in_flight"] == 1
    assert bulkhead.snapshot()["waiting"] == 0


async def test_a_waiter_cancelled_just_after_being_handed_a_slot_passes_it_on() -> None:
    clock = FakeClock(auto_advance=False)
    bulkhead = Bulkhead("p", clock, max_concurrent=1, timeout=60.0)
    await bulkhead.acquire()
    handed = asyncio.ensure_future(bulkhead.acquire())
    await asyncio.sleep(0)
    bulkhead.release()  # the slot is handed over...
    handed.cancel()  # ...and the waiter is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert bulkhead.snapshot()["in_flight"] == 0


async def test_on_the_system_clock_the_timeout_really_fires() -> None:
    bulkhead = Bulkhead("p", SystemClock(), max_concurrent=1, timeout=0.01)
    async with bulkhead.slot():
        with pytest.raises(BulkheadFull):
            await bulkhead.acquire()
    assert bulkhead.snapshot()["in_flight"] == 0
