"""``/openapi.json`` tells the truth: schemathesis fuzzes the live server from it (valid and
invalid inputs, with and without the token) and checks every answer against it; no request may
produce a 500. Also: every route the app serves is described, and nothing else is.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import schemathesis
from aiohttp import web as aioweb
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from enrichctl import service
from enrichctl.settings import Settings
from enrichctl.web import openapi
from enrichctl.web import page as webpage
from enrichctl.web import server as web

TOKEN = "openapi-test-token"
SYMBOLS = ["AAPL", "MSFT"]
EXAMPLES = 25  # per operation and mode: ~1,000 requests in all, a few seconds


class LiveServer:
    """The serve app on 127.0.0.1 in a thread of its own (schemathesis calls it synchronously)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        name="live-serve", daemon=True)
        self.error: BaseException | None = None

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = aioweb.AppRunner(web.app_create(self.settings))
        try:
            await runner.setup()
            site = aioweb.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(30), "the server did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


def _settings(db: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{db}", provider="demo",
        universe=[{"symbol": s} for s in SYMBOLS], timeframes=("1d",),
        history_days={"1d": 30},  # triggered runs of fuzzed symbols stay small
        retry_delay_seconds=0.0, serve={"token": TOKEN},
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = _settings(tmp_path_factory.mktemp("openapi") / "enrichctl.db")
    asyncio.run(service.run(settings, service.RunOptions(symbols=SYMBOLS)))
    with LiveServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(live: LiveServer) -> schemathesis.BaseSchema:
    """Loaded from the live ``/openapi.json``, so the served document is what gets checked."""
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


# Negative cases (values the document forbids) exist only where there are inputs.
CASES = [
    (method.upper(), path, mode)
    for path, item in openapi.document(token_required=True)["paths"].items()
    for method, op in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "parameters" in op or "requestBody" in op
]


# schemathesis' own pytest loader (from_fixture) does not run under pytest 9 yet, so each
# operation runs through its Hypothesis strategy here; the checks are schemathesis' own.
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g}" for m, p, g in CASES])
def test_the_live_api_conforms_to_its_openapi_document(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    replaced: dict[str, Any] = {}
    if path.endswith("/trigger") and mode is GenerationMode.POSITIVE:
        replaced = {"excluded_checks": [positive_data_acceptance],
                    "additional_checks": [trigger_refuses_only_empty_selections]}
    if path.endswith("/bars") and mode is GenerationMode.POSITIVE:
        replaced = {"excluded_checks": [positive_data_acceptance],
                    "additional_checks": [bars_refuse_only_reversed_ranges]}

    @given(case=operation.as_strategy(generation_mode=mode))
    # derandomize: the same examples every run, so a failure here is reproducible, not luck.
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, **replaced)

    check()


def trigger_refuses_only_empty_selections(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """A well-formed trigger is accepted (202), refused while a run is active (409), or answered
    400 when its asset_class leaves no symbol to run, as ``enrichctl run`` exits 2 then."""
    if response.status_code == 400:
        assert "asset_class" in (case.query or {}), response.text
        assert "nothing to do" in response.json()["detail"], response.text
    else:
        assert response.status_code in (202, 409), response.text


def bars_refuse_only_reversed_ranges(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """Well-formed bars requests are answered (200), or 404 for a series not stored, or 400 only
    when ``start`` lies after ``end`` (a rule between two parameters a schema cannot state)."""
    if response.status_code == 400:
        query = case.query or {}
        assert "start" in query and "end" in query, response.text
        assert "start is after end" in response.json()["detail"], response.text
    else:
        assert response.status_code in (200, 404), response.text


def test_every_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    app = web.app_create(_settings(tmp_path / "unused.db"))
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method in ("GET", "POST") and route.resource is not None
    }
    described = {
        (method, path)
        for path, item in openapi.document(token_required=True)["paths"].items()
        for method in item
    }
    assets = {("get", f"/static/{name}") for name in webpage.STATIC_FILES}
    assert served - assets == described
