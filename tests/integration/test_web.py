"""``enrichctl serve`` over real loopback HTTP on a real SQLite database filled by the demo provider.

The API must return the very documents the CLI prints (``Session``), answer every error as JSON
with the right status, refuse state changes without POST, token or same origin, and start runs
in the background under the same lease rules as the CLI.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import shutil
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from enrichctl import service
from enrichctl.errors import ConfigError, NotFound
from enrichctl.resilience.registry import ResilienceRegistry
from enrichctl.settings import Settings
from enrichctl.web import server as web
from enrichctl.web.cache import Rendered, SharedBuilds

API = "/api/v1/enrichment"
TOKEN = "s3cret-token-for-tests"
SYMBOLS = ["AAPL", "MSFT"]


def make_settings(db_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{db_path}",
        "provider": "demo",
        "universe": [{"symbol": s} for s in SYMBOLS],
        "timeframes": ("1d",),
        "history_days": {"1d": 60},
        "retry_delay_seconds": 0.0,
        "serve": {"token": None},
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database after a demo run of AAPL and MSFT; each test gets a copy."""
    path = tmp_path_factory.mktemp("web") / "template.db"
    settings = make_settings(path)
    report = asyncio.run(service.run(settings, service.RunOptions(symbols=SYMBOLS)))
    assert report.status == "succeeded"
    return path


@pytest.fixture
def db_path(template_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "enrichctl.db"
    shutil.copy(template_db, path)
    return path


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return make_settings(db_path)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[TestClient]:
    """The app on 127.0.0.1 with an ephemeral port, and a client for it."""
    async with TestClient(TestServer(web.app_create(settings))) as client:
        yield client


async def get_json(client: TestClient, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def without_generated_at(doc: Any) -> Any:
    """``doc`` without what depends on the moment it was built: ``generated_at`` and ages such as
    a worker's ``heartbeat_age_s`` (the served and the session's document are built a few
    milliseconds apart, which rounds to 0.0 or 0.1 s)."""
    if isinstance(doc, dict):
        return {k: without_generated_at(v) for k, v in doc.items()
                if k != "generated_at" and not k.endswith("_age_s")}
    if isinstance(doc, list):
        return [without_generated_at(v) for v in doc]
    return doc


async def run_finished(client: TestClient, run_id: int, timeout: float = 20.0) -> dict[str, Any]:
    """The history entry of ``run_id`` once it is no longer running."""
    async with asyncio.timeout(timeout):
        while True:
            runs = (await get_json(client, f"{API}/history?limit=5"))["runs"]
            run = next((r for r in runs if r["run_id"] == run_id), None)
            if run is not None and run["status"] != "running":
                return run
            await asyncio.sleep(0.05)


# --- the documents ----------------------------------------------------------------------------


async def test_documents_are_the_sessions_documents(settings: Settings) -> None:
    async with serving(settings) as client, service.session_open(settings) as session:
        pairs: list[tuple[str, Callable[[], Any]]] = [
            (f"{API}/dashboard/overview", session.overview),
            (f"{API}/dashboard/health", session.health),
            (f"{API}/dashboard/metrics", session.metrics),
            (f"{API}/dashboard/job-status/AAPL", lambda: session.job_status("AAPL")),
            (f"{API}/history?limit=5", lambda: session.history(5)),
            (f"{API}/history", lambda: session.history(20)),
        ]
        for path, build in pairs:
            served = await get_json(client, path)
            # Through JSON, as the CLI prints it: tuples become lists, keys stay in order.
            expected = json.loads(json.dumps(await build(), default=str))
            assert without_generated_at(served) == without_generated_at(expected), path


async def test_overview_lists_the_symbols_and_the_run(settings: Settings) -> None:
    async with serving(settings) as client:
        doc = await get_json(client, f"{API}/dashboard/overview")
    assert [s["symbol"] for s in doc["processing_symbols"]] == SYMBOLS
    assert {s["status"] for s in doc["processing_symbols"]} == {"succeeded"}
    assert doc["last_run"]["status"] == "succeeded"


async def test_health_is_200_when_healthy_or_degraded_and_503_when_unhealthy(settings: Settings, db_path: Path) -> None:
    async with serving(settings) as client:
        assert (await get_json(client, f"{API}/dashboard/health"))["status"] == "healthy"
        assert (await client.post(f"{API}/pause", json={"reason": "maintenance"})).status == 200
        degraded = await get_json(client, f"{API}/dashboard/health")
        assert degraded["status"] == "degraded"
        assert any("maintenance" in line for line in degraded["issues"])
    # A universe symbol that was never fetched and a series left years behind: unhealthy.
    stale = make_settings(db_path, universe=[{"symbol": "OLD"}])
    await service.run(stale, service.RunOptions(symbols=["OLD"], as_of=1_600_000_000_000))
    async with serving(stale) as client:
        unhealthy = await get_json(client, f"{API}/dashboard/health", status=503)
    assert unhealthy["status"] == "unhealthy"
    assert any(line.startswith("OLD/1d: stale") for line in unhealthy["issues"])


async def test_job_status_answers_404_for_an_unknown_symbol_and_400_for_an_invalid_one(settings: Settings) -> None:
    async with serving(settings) as client:
        doc = await get_json(client, f"{API}/dashboard/job-status/aapl")
        assert doc["symbol"] == "AAPL" and doc["recent_jobs"][0]["status"] == "succeeded"
        unknown = await get_json(client, f"{API}/dashboard/job-status/ZZZZ", status=404)
        assert unknown["error"] == "not_found" and "ZZZZ" in unknown["detail"]
        for bad in ("A%20B", "%E2%80%A2", "TOO-LONG-FOR-A-TICKER-X", "AAPL%0A"):
            invalid = await get_json(client, f"{API}/dashboard/job-status/{bad}", status=400)
            assert invalid["error"] == "bad_request" and "invalid symbol" in invalid["detail"]


async def test_history_limit_is_validated(settings: Settings) -> None:
    async with serving(settings) as client:
        assert (await get_json(client, f"{API}/history?limit=1"))["count"] == 1
        assert (await get_json(client, f"{API}/history"))["limit"] == 20
        for bad in ("0", "1001", "abc", "-1", "", "1.5", "99999999999"):
            doc = await get_json(client, f"{API}/history?limit={bad}", status=400)
            assert doc["error"] == "bad_request" and "1 to 1000" in doc["detail"]


async def test_unknown_paths_and_methods_answer_json(settings: Settings) -> None:
    async with serving(settings) as client:
        missing = await get_json(client, "/api/v1/enrichment/nothing", status=404)
        assert missing["error"] == "not_found" and "/openapi.json" in missing["detail"]
        response = await client.put(f"{API}/dashboard/overview")
        assert response.status == 405 and "GET" in response.headers["Allow"]
        doc = await response.json()
        assert doc["error"] == "method_not_allowed" and "PUT is not allowed" in doc["detail"]


async def test_state_changes_are_never_get(settings: Settings) -> None:
    async with serving(settings) as client:
        for name in ("trigger", "pause", "resume"):
            response = await client.get(f"{API}/{name}")
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
            doc = await response.json()
            assert doc["error"] == "method_not_allowed" and "never GET" in doc["detail"]
        overview = await get_json(client, f"{API}/dashboard/overview")
        assert overview["scheduler"]["paused"] is False


async def test_a_405_allows_exactly_the_methods_the_route_accepts(settings: Settings) -> None:
    """Every method a 405's Allow names is answered by the route, and no other is."""
    paths = ["/", "/symbol/AAPL", "/static/app.js", "/metrics", "/openapi.json",
             f"{API}/dashboard/overview", f"{API}/history", f"{API}/pause", f"{API}/resume"]
    async with serving(settings) as client:
        for path in paths:
            refused = await client.request("PUT", path)
            assert refused.status == 405, path
            allowed = set(refused.headers["Allow"].split(","))
            for method in ("GET", "HEAD", "POST"):
                status = (await client.request(method, path)).status
                assert (status != 405) == (method in allowed), (path, method, status, allowed)
        trigger = await client.request("PUT", f"{API}/trigger")
        assert trigger.headers["Allow"] == "POST"
        assert "allowed: POST" in (await trigger.json())["detail"]


# --- pause and resume ---------------------------------------------------------------------------


async def test_pause_and_resume_show_in_the_overview(settings: Settings) -> None:
    async with serving(settings) as client:
        paused = await client.post(f"{API}/pause", json={"reason": "provider outage"})
        assert paused.status == 200 and (await paused.json())["reason"] == "provider outage"
        scheduler = (await get_json(client, f"{API}/dashboard/overview"))["scheduler"]
        assert scheduler["paused"] is True and scheduler["paused_reason"] == "provider outage"
        assert scheduler["paused_by"].startswith("api@")
        resumed = await client.post(f"{API}/resume")
        assert await resumed.json() == {"paused": False, "was_paused": True}
        assert (await get_json(client, f"{API}/dashboard/overview"))["scheduler"]["paused"] is False
        by_query = await client.post(f"{API}/pause", params={"reason": "from the query"})
        assert (await by_query.json())["reason"] == "from the query"


async def test_pause_bodies_are_bounded_and_validated(settings: Settings) -> None:
    async with serving(settings) as client:
        cases = [
            ({"json": {"reason": "x" * 501}}, 400, "1 to 500 characters"),
            ({"params": {"reason": ""}}, 400, "1 to 500 characters"),
            ({"json": {"reason": 5}}, 400, "string"),
            ({"json": {"why": "no"}}, 400, "unknown field"),
            ({"json": ["reason"]}, 400, "JSON object"),
            ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
            ({"data": b"reason=x", "headers": {"Content-Type": "text/plain"}}, 415, "application/json"),
            ({"data": b"x" * (70 * 1024), "headers": {"Content-Type": "application/json"}}, 413, ""),
        ]
        for kwargs, status, words in cases:
            response = await client.post(f"{API}/pause", **kwargs)
            assert response.status == status, (kwargs.keys(), await response.text())
            doc = await response.json()
            assert set(doc) == {"error", "detail"} and words in doc["detail"]
        overview = await get_json(client, f"{API}/dashboard/overview")
        assert overview["scheduler"]["paused"] is False


# --- security ---------------------------------------------------------------------------------


async def test_a_configured_token_is_required_for_every_post(
    db_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    caplog.set_level(logging.DEBUG)
    settings = make_settings(db_path, serve={"token": TOKEN})
    async with serving(settings) as client:
        for name in ("pause", "resume", "trigger"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
                response = await client.post(f"{API}/{name}", headers=headers)
                assert response.status == 401, name
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await response.json())["error"] == "unauthorized"
        assert (await get_json(client, f"{API}/dashboard/overview"))["scheduler"]["paused"] is False
        ok = await client.post(f"{API}/pause", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200
        assert (await get_json(client, f"{API}/dashboard/overview"))["scheduler"]["paused"] is True
        # Reading needs no token.
        assert (await client.get("/metrics")).status == 200
    assert (TOKEN.encode(), TOKEN.encode()) in compared, "the token is compared with hmac.compare_digest"
    assert TOKEN not in caplog.text


async def test_undecodable_headers_are_refused_not_crashed(db_path: Path) -> None:
    settings = make_settings(db_path, serve={"token": TOKEN})
    async with serving(settings) as client:
        for header in (b"Authorization: Bearer \xff\xfe", b"Origin: http://\xff"):
            reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
            writer.write(b"POST " + API.encode() + b"/pause HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header
                         + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            status_line = (await reader.read()).split(b"\r\n", 1)[0]
            writer.close()
            assert status_line in (b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 403 Forbidden"), status_line


async def test_cross_origin_posts_are_refused(settings: Settings) -> None:
    async with serving(settings) as client:
        evil = await client.post(f"{API}/pause", headers={"Origin": "http://evil.example"})
        assert evil.status == 403 and (await evil.json())["error"] == "forbidden"
        sandboxed = await client.post(f"{API}/pause", headers={"Origin": "null"})
        assert sandboxed.status == 403
        assert (await get_json(client, f"{API}/dashboard/overview"))["scheduler"]["paused"] is False
        own = f"http://{client.server.host}:{client.server.port}"
        assert (await client.post(f"{API}/pause", headers={"Origin": own})).status == 200


def test_serving_a_public_address_without_a_token_is_refused(settings: Settings, db_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.com"):
        with pytest.raises(ConfigError, match="without a token"):
            asyncio.run(web.serve_main(settings, host, 0))
    assert all(web.host_is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    web.bind_check("0.0.0.0", make_settings(db_path, serve={"token": TOKEN}))  # with a token: allowed


async def test_the_page_and_its_assets_are_self_contained(settings: Settings) -> None:
    async with serving(settings) as client:
        page = await client.get("/")
        html = await page.text()
        script = await (await client.get("/static/app.js")).text()
    assert page.status == 200 and page.content_type == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http" not in html.replace('lang="en"', "")  # no CDN or remote asset
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, f"the page script must not use {sink}"
    assert "textContent" in script


# --- runs ---------------------------------------------------------------------------------------


async def test_trigger_starts_a_run_and_a_second_one_is_refused(settings: Settings, db_path: Path) -> None:
    async with serving(settings) as client:
        response = await client.post(f"{API}/trigger", params=[("symbols", "aapl"), ("symbols", "MSFT")])
        assert response.status == 202, await response.text()
        accepted = await response.json()
        assert accepted["status"] == "running" and accepted["symbols"] == SYMBOLS
        run = await run_finished(client, accepted["run_id"])
        assert run["trigger"] == "api" and run["status"] == "succeeded"
        # Another process holds the lease: 409, and no run is recorded.
        async with service.session_open(settings) as session:
            await session.store.lease_claim(10_000, socket.gethostname(), os.getpid(), 60_000)
            refused = await client.post(f"{API}/trigger")
            assert refused.status == 409
            doc = await refused.json()
            assert doc["error"] == "run_active" and "10000" in doc["detail"]
            await session.store.lease_release(10_000)
        assert (await get_json(client, f"{API}/history?limit=1"))["runs"][0]["run_id"] == run["run_id"]


async def test_trigger_parameters_are_validated(settings: Settings) -> None:
    async with serving(settings) as client:
        cases = [
            ([("symbols", "NOT A TICKER")], "invalid symbol"),
            ([("asset_class", "bond")], "invalid asset_class"),
            ([("symbols", f"S{i}") for i in range(101)], "too many symbols"),
            ([("symbols", "AAPL"), ("asset_class", "crypto")], "nothing to do"),
        ]
        for params, words in cases:
            response = await client.post(f"{API}/trigger", params=params)
            assert response.status == 400, await response.text()
            assert words in (await response.json())["detail"]
        assert (await get_json(client, f"{API}/history"))["count"] == 1  # the template's run only


async def test_stopping_the_server_cancels_its_run_and_records_it(db_path: Path) -> None:
    universe = [{"symbol": f"S{i:02d}"} for i in range(30)]
    settings = make_settings(db_path, universe=universe, history_days={"1d": 3650})
    port = _free_port()
    server = asyncio.create_task(web.serve_main(settings, "127.0.0.1", port))
    base = f"http://127.0.0.1:{port}"
    async with ClientSession() as http:
        async with asyncio.timeout(10):
            while True:  # until it listens
                try:
                    async with http.get(f"{base}{API}/dashboard/overview") as response:
                        assert response.status == 200
                        break
                except OSError:
                    await asyncio.sleep(0.02)
        async with http.post(f"{base}{API}/trigger") as response:
            assert response.status == 202
            run_id = (await response.json())["run_id"]
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    async with service.session_open(settings) as session:
        run = next(r for r in (await session.history(5))["runs"] if r["run_id"] == run_id)
        assert run["status"] == "cancelled"
        assert await session.active_run() is None, "the lease was released"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Prometheus and errors -------------------------------------------------------------------


async def test_prometheus_exposition_parses_and_reports_the_store(settings: Settings) -> None:
    registry = ResilienceRegistry()
    registry.register_circuit_breaker("polygon")
    registry.register_rate_limiter("polygon", rate=5)
    async with service.session_open(settings) as session:
        run_id = (await session.history(1))["runs"][0]["run_id"]
        await session.store.run_update(run_id, resilience=json.dumps(registry.get_status()))
        overview = await session.overview()
    async with serving(settings) as client:
        response = await client.get("/metrics")
        assert response.status == 200 and response.content_type == "text/plain"
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}

    def value(name: str, **labels: str) -> float:
        return next(s.value for s in families[name].samples
                    if all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("enrichctl_runs", status="succeeded") == 1
    assert value("enrichctl_jobs", status="succeeded") == 2
    assert value("enrichctl_symbols", status="succeeded") == 2
    assert value("enrichctl_bars_stored") == overview["totals"]["bars"] > 0
    assert value("enrichctl_series_bars", symbol="AAPL", timeframe="1d") > 0
    assert 0 <= value("enrichctl_series_staleness_seconds", symbol="MSFT", timeframe="1d") < 10 * 86_400
    assert value("enrichctl_provider_requests", provider="demo", code="200", outcome="ok") == 2
    latency = families["enrichctl_provider_request_latency_seconds"]
    assert latency.type == "histogram"
    assert next(s.value for s in latency.samples if s.labels.get("le") == "+Inf") == 2
    assert value("enrichctl_circuit_breaker_state", breaker="polygon", state="closed") == 1
    assert value("enrichctl_circuit_breaker_state", breaker="polygon", state="open") == 0
    assert value("enrichctl_rate_limiter_tokens", limiter="polygon") == 5
    assert value("enrichctl_health", status="healthy") == 1
    assert value("enrichctl_scheduler_paused") == 0


async def test_failures_answer_json_without_internals(settings: Settings, db_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    async with service.session_open(settings) as session:
        run_id = (await session.history(1))["runs"][0]["run_id"]
        await session.store.run_update(run_id, resilience="{broken json")
    async with serving(settings) as client:
        response = await client.get(f"{API}/dashboard/overview")
        assert response.status == 500
        doc = await response.json()
        assert doc["error"] == "internal_error" and "Traceback" not in doc["detail"]
        assert "json" not in doc["detail"].lower()
        assert "serve_unexpected_error" in caplog.text  # the server log has it
        with sqlite3.connect(db_path) as conn:
            conn.execute("DROP TABLE quality_issues")
        response = await client.get(f"{API}/dashboard/job-status/AAPL")
        assert response.status == 503
        doc = await response.json()
        assert doc["error"] == "store_unavailable"
        assert "quality_issues" not in doc["detail"] and str(db_path) not in doc["detail"]


# --- shared builds ------------------------------------------------------------------------------


async def test_concurrent_requests_share_one_build_but_never_one_from_before_a_change() -> None:
    now = [0.0]
    builds = SharedBuilds(max_age=1.0, clock=lambda: now[0])
    started = 0
    gate = asyncio.Event()

    async def build() -> Rendered:
        nonlocal started
        started += 1
        number = started
        await gate.wait()
        return Rendered(200, str(number).encode(), None)

    first = [asyncio.create_task(builds.get(("overview",), build)) for _ in range(10)]
    await asyncio.sleep(0)
    builds.invalidate()  # a POST changed the state: later requests must not join the old build
    later = asyncio.create_task(builds.get(("overview",), build))
    await asyncio.sleep(0)
    gate.set()
    assert {(await t).body for t in first} == {b"1"}
    assert (await later).body == b"2"
    now[0] = 0.9  # within max_age of build 2's start: served again
    assert (await builds.get(("overview",), build)).body == b"2"
    now[0] = 1.1  # older than max_age: built anew
    assert (await builds.get(("overview",), build)).body == b"3"
    assert started == 3


async def test_a_failed_build_is_not_kept() -> None:
    builds = SharedBuilds(max_age=60.0)
    calls = 0

    async def build() -> Rendered:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise NotFound("unknown symbol")
        return Rendered(200, b"ok", None)

    with pytest.raises(NotFound):
        await builds.get(("job-status", "X"), build)
    assert (await builds.get(("job-status", "X"), build)).body == b"ok"
