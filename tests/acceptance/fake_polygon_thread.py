"""The integration suite's fake Polygon, served from a background thread so the installed CLI
(a separate process) can talk to it over loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from integration.fake_polygon import FakePolygon  # tests/ is on sys.path (rootdir conftest)

API_KEY = "acceptance-key"


@contextmanager
def fake_polygon(**kwargs: Any) -> Iterator[FakePolygon]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakePolygon(api_key=API_KEY, **kwargs)
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def polygon_config(fake: FakePolygon, *, symbols: tuple[str, ...]) -> str:
    """A config using the fake server, no retries or waits (the failures are meant to stay)."""
    universe = ", ".join(f'{{ symbol = "{s}" }}' for s in symbols)
    return (f'provider = "polygon"\nmax_retries = 0\nretry_delay_seconds = 0\n'
            f'universe = [{universe}]\n'
            f'[polygon]\nbase_url = "{fake.url}"\napi_key = "{API_KEY}"\nrequests_per_minute = 0\n')
