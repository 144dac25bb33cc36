"""The dead-man's-switch pings against a fake healthchecks server on 127.0.0.1: the right paths,
and a dead, slow or failing endpoint costs the run at most the timeout and never raises."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from enrichctl.notify import ping
from enrichctl.settings import NotifySettings

CHECK_UUID = "5f1c0f4e-8d6b-4a53-9b7e-2f0c6a1d9e42"


@dataclass
class FakeHealthchecks:
    """Records every GET path; answers with ``status`` after ``delay`` seconds."""

    base: str = ""
    paths: list[str] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text="OK")


@pytest.fixture
async def healthchecks() -> AsyncIterator[FakeHealthchecks]:
    fake = FakeHealthchecks()
    app = web.Application()
    app.router.add_get("/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
def warnings_logged() -> Iterator[list[logging.LogRecord]]:
    """The records enrichctl.notify logs (a handler of its own: independent of logging setup)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("enrichctl.notify")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _text(record: logging.LogRecord) -> str:
    return f"{record.getMessage()} {getattr(record, 'fields', {})}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_each_phase_gets_its_healthchecks_path(healthchecks: FakeHealthchecks) -> None:
    settings = NotifySettings(ping_url=f"{healthchecks.base}/ping/{CHECK_UUID}")
    results = [await ping(settings, phase) for phase in ("start", "success", "fail")]
    assert results == [True, True, True]
    assert healthchecks.paths == [
        f"/ping/{CHECK_UUID}/start", f"/ping/{CHECK_UUID}", f"/ping/{CHECK_UUID}/fail",
    ]


async def test_a_trailing_slash_and_a_query_are_kept_apart(healthchecks: FakeHealthchecks) -> None:
    settings = NotifySettings(ping_url=f"{healthchecks.base}/ping/{CHECK_UUID}/?create=1")
    assert await ping(settings, "start")
    assert healthchecks.paths == [f"/ping/{CHECK_UUID}/start?create=1"]


async def test_a_given_session_is_used_and_left_open(healthchecks: FakeHealthchecks) -> None:
    settings = NotifySettings(ping_url=f"{healthchecks.base}/ping/{CHECK_UUID}")
    async with aiohttp.ClientSession() as session:
        assert await ping(settings, "success", session=session)
        assert not session.closed
    assert healthchecks.paths == [f"/ping/{CHECK_UUID}"]


async def test_no_url_sends_nothing(warnings_logged: list[logging.LogRecord]) -> None:
    assert await ping(NotifySettings(), "start") is False
    assert warnings_logged == []


async def test_an_error_status_is_a_failed_ping_logged_without_the_secret(
    healthchecks: FakeHealthchecks, warnings_logged: list[logging.LogRecord]
) -> None:
    healthchecks.status = 500
    settings = NotifySettings(ping_url=f"{healthchecks.base}/ping/{CHECK_UUID}")
    assert await ping(settings, "fail") is False
    assert len(warnings_logged) == 1
    line = _text(warnings_logged[0])
    assert "HTTP 500" in line and healthchecks.base in line
    assert CHECK_UUID not in line


async def test_an_unreachable_endpoint_returns_false_quickly(
    warnings_logged: list[logging.LogRecord],
) -> None:
    settings = NotifySettings(ping_url=f"http://127.0.0.1:{_closed_port()}/{CHECK_UUID}", timeout_seconds=2)
    started = time.monotonic()
    assert await ping(settings, "start") is False
    assert time.monotonic() - started < 2
    assert len(warnings_logged) == 1 and CHECK_UUID not in _text(warnings_logged[0])
    assert "cannot connect" in _text(warnings_logged[0])


async def test_a_slow_endpoint_costs_at_most_the_timeout(
    healthchecks: FakeHealthchecks, warnings_logged: list[logging.LogRecord]
) -> None:
    healthchecks.delay = 5.0
    settings = NotifySettings(ping_url=f"{healthchecks.base}/{CHECK_UUID}", timeout_seconds=0.3)
    started = time.monotonic()
    assert await ping(settings, "success") is False
    assert time.monotonic() - started < 1.5
    assert "no answer within 0.3 s" in _text(warnings_logged[0])


async def test_an_unusable_url_is_a_failed_ping_not_an_exception(
    warnings_logged: list[logging.LogRecord],
) -> None:
    settings = NotifySettings(ping_url=f"ftp://hc.invalid/{CHECK_UUID}")
    assert await ping(settings, "start") is False
    assert len(warnings_logged) == 1 and CHECK_UUID not in _text(warnings_logged[0])


async def test_cancelling_a_ping_cancels_it(healthchecks: FakeHealthchecks) -> None:
    healthchecks.delay = 5.0
    settings = NotifySettings(ping_url=f"{healthchecks.base}/{CHECK_UUID}", timeout_seconds=10)
    task = asyncio.create_task(ping(settings, "start"))
    while not healthchecks.paths:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
