"""DNS rebinding: ``serve`` answers only requests that name it by a host it is meant to have.

A page on ``attacker.example`` whose name now resolves to 127.0.0.1 reaches a loopback server
with its own name in ``Host`` (and in ``Origin``): every method and path must answer 421, and
nothing may change. Loopback names and ``serve.allowed_hosts`` are answered; a server bound to
another address answers every name until ``serve.allowed_hosts`` is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from enrichctl.settings import Settings
from enrichctl.web import openapi
from enrichctl.web import server as web
from enrichctl.web.hosts import HostPolicy, host_without_port

if TYPE_CHECKING:
    from conftest import Database  # the ``db`` fixture: one empty database per backend

API = "/api/v1/enrichment"
TOKEN = "hosts-test-token"


@asynccontextmanager
async def serving(settings: Settings, bind_host: str | None = None) -> AsyncIterator[TestClient]:
    """The app on 127.0.0.1 (an ephemeral port), told it was bound to ``bind_host``."""
    async with TestClient(TestServer(web.app_create(settings, bind_host))) as client:
        yield client


async def _paused(client: TestClient) -> bool:
    response = await client.get(f"{API}/dashboard/overview")
    assert response.status == 200, await response.text()
    return bool((await response.json())["scheduler"]["paused"])


async def test_a_rebound_name_is_refused_for_every_method_and_path(db: Database) -> None:
    settings = db.settings(["AAPL"])
    async with serving(settings) as client:
        port = client.server.port
        evil = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
        requests = [("POST", f"{API}/pause"), ("POST", f"{API}/trigger"), ("POST", f"{API}/resume"),
                    ("GET", f"{API}/dashboard/overview"), ("GET", "/metrics"), ("GET", "/"),
                    ("GET", "/openapi.json"), ("GET", "/static/app.js"), ("GET", "/nowhere"),
                    ("PUT", f"{API}/pause")]
        for method, path in requests:
            response = await client.request(method, path, headers=evil)
            assert response.status == 421, (method, path, response.status)
            doc = await response.json()
            assert doc["error"] == "misdirected_request" and "serve.allowed_hosts" in doc["detail"]
            assert "attacker.example" in doc["detail"] and str(port) not in doc["detail"]
        assert not await _paused(client), "the refused pause changed nothing"
        history = await (await client.get(f"{API}/history")).json()
        assert history["runs"] == [], "the refused trigger started no run"


async def test_loopback_names_are_answered_with_or_without_port(db: Database) -> None:
    settings = db.settings(["AAPL"])
    async with serving(settings) as client:
        port = client.server.port
        for host in ("localhost", f"localhost:{port}", "LocalHost.", f"127.0.0.1:{port}", "127.9.8.7",
                     f"[::1]:{port}", "[::1]", "localhost.localdomain"):
            response = await client.get("/metrics", headers={"Host": host})
            assert response.status == 200, host
        for host in ("127.0.0.1.attacker.example", "localhost.attacker.example", "2130706433",
                     "[::2]", "attacker.example:80:80", "0.0.0.0"):
            response = await client.get("/metrics", headers={"Host": host})
            assert response.status == 421, host
        # A state change with the own origin under a loopback name still works.
        own = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
        assert (await client.post(f"{API}/pause", headers=own)).status == 200
        assert await _paused(client)


async def test_allowed_hosts_are_answered_and_nothing_else(db: Database) -> None:
    settings = db.settings(["AAPL"], serve={"allowed_hosts": ["dash.example", "192.0.2.10", "2001:db8::1"]})
    async with serving(settings) as client:
        for host in ("dash.example", "DASH.example:8000", "192.0.2.10:8000", "[2001:db8::1]:8000",
                     "localhost"):
            assert (await client.get("/metrics", headers={"Host": host})).status == 200, host
        for host in ("www.dash.example", "dash.example.attacker.example", "192.0.2.11"):
            assert (await client.get("/metrics", headers={"Host": host})).status == 421, host


async def test_on_a_public_address_every_name_is_answered_until_allowed_hosts_is_set(db: Database) -> None:
    settings = db.settings(["AAPL"], serve={"token": TOKEN})
    async with serving(settings, bind_host="0.0.0.0") as client:
        assert (await client.get("/metrics", headers={"Host": "box.lan:8000"})).status == 200
        # The token still guards every state change there.
        assert (await client.post(f"{API}/pause", headers={"Host": "box.lan:8000"})).status == 401
    restricted = db.settings(["AAPL"], serve={"token": TOKEN, "allowed_hosts": ["box.lan"]})
    async with serving(restricted, bind_host="0.0.0.0") as client:
        assert (await client.get("/metrics", headers={"Host": "box.lan:8000"})).status == 200
        assert (await client.get("/metrics", headers={"Host": "localhost"})).status == 200
        assert (await client.get("/metrics", headers={"Host": "attacker.example"})).status == 421


def test_allowed_hosts_entries_are_validated(db: Database) -> None:
    base = db.settings(["AAPL"]).serve.model_dump()
    for bad in ("dash.example:8000", "http://dash.example", "*.example", "", "dash example", "[::1]:80"):
        with pytest.raises(ValidationError, match="not a host name or IP address"):
            Settings(serve={**base, "allowed_hosts": [bad]})
    good = Settings(serve={**base, "allowed_hosts": ["Dash.Example", "::1", "[2001:db8::1]", "x."]})
    assert good.serve.allowed_hosts == ("dash.example", "::1", "[2001:db8::1]", "x.")


def test_host_headers_are_read_as_browsers_send_them() -> None:
    assert host_without_port("Example.COM:8000") == "example.com"
    assert host_without_port("[::1]:8000") == "::1"
    assert host_without_port("localhost.") == "localhost"
    assert host_without_port("a:b") == "a:b"  # not a port: kept whole, so it matches nothing
    policy = HostPolicy.for_bind("127.0.0.1", ())
    assert policy.refusal(None) == "a Host header naming this server is required"
    assert policy.refusal("") is not None and policy.refusal("127.0.0.1:1") is None


def test_the_openapi_document_lists_421_for_every_operation() -> None:
    operations = [op for item in openapi.document(token_required=True)["paths"].values() for op in item.values()]
    assert operations and all("421" in op["responses"] for op in operations)
