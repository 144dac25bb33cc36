"""Every metric the bundled alert rules and Grafana dashboard use is in the live ``/metrics`` of
``serve`` (on SQLite and PostgreSQL), so a renamed metric cannot silently disable an alert.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp.test_utils import TestClient, TestServer
from monitoring_names import exposed_names, used_names

from enrichctl import service
from enrichctl.web import server as web

if TYPE_CHECKING:
    from conftest import Database  # the ``db`` fixture: one empty database per backend



async def test_every_metric_the_rules_and_the_dashboard_use_is_served(db: Database) -> None:
    settings = db.settings(["AAPL", "MSFT"])
    report = await service.run(settings, service.RunOptions(symbols=["AAPL", "MSFT"]))
    assert report.status == "succeeded"
    async with service.session_open(settings) as session:
        await session.pause("maintenance", by="test")  # the pause metrics exist only while paused
    async with TestClient(TestServer(web.app_create(settings))) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.text()
    exposed = exposed_names(text)
    used = used_names()
    assert len(used["alerts.yml"]) >= 10 and len(used["grafana-dashboard.json"]) >= 15
    for file, names in used.items():
        assert names - exposed == set(), f"{file} uses metrics /metrics does not serve"
    assert 'enrichctl_series_quality_score{provider="demo",symbol="AAPL",synthetic="true",timeframe="1d"} 1.0' in text
    assert "enrichctl_scheduler_paused 1.0" in text
