"""The progress display shows an ETA and says when the limiter waits for the provider's quota;
``--log-format json`` keeps every stderr line JSON. Against the fake Polygon over loopback."""

from __future__ import annotations

import asyncio
import json
import re

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

from .fake_polygon_thread import fake_polygon, polygon_config
from .workspace import AS_OF, Workspace

SYMBOLS = ("AAPL", "MSFT", "NVDA")
# One request per 4 s window: every symbol after the first waits for the quota, long enough
# (over QUOTA_NOTICE_S) to be shown even when a loaded machine spends a second on each job.
SLOW_PLAN = "requests_per_minute = 1\nrate_window_seconds = 4\n"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _hold(fake) -> None:
    demo = DemoProvider(SessionCalendar())
    for symbol in SYMBOLS:
        series = Series(symbol, AssetClass.STOCK, Timeframe.D1)
        asyncio.run(fake.hold_from(demo, series, 1_714_521_600_000, 1_717_545_600_000))


def _config(ws: Workspace, fake) -> str:
    text = polygon_config(fake, symbols=SYMBOLS).replace("requests_per_minute = 0\n", SLOW_PLAN)
    return str(ws.write("slow.toml", text))


def test_progress_says_it_waits_for_the_quota_and_shows_an_eta(workspace: Workspace) -> None:
    with fake_polygon() as fake:
        _hold(fake)
        config = _config(workspace, fake)
        result = workspace.run_on_terminal("--config", config, "run", "--as-of", AS_OF, "--since", "2024-05-01")
    assert result.code == 0, result
    assert "waiting for the provider's quota (" in result.err, result
    # A real estimate, not only the label: with two of three jobs done, one job is left, and a
    # job takes about one 4 s quota window, so the ETA is a few seconds (rich: H:MM:SS).
    screen = ANSI.sub("", result.err)
    left = [int(h) * 3600 + int(m) * 60 + int(s)
            for h, m, s in re.findall(r"2/3 [^\r\n]*? eta (\d+):(\d\d):(\d\d)", screen)]
    assert left, result
    assert all(1 <= seconds <= 20 for seconds in left), left
    assert "run 1 succeeded" in result.out and "\x1b" not in result.out, result


def test_json_logs_have_no_plain_line_and_record_the_quota_waits(workspace: Workspace) -> None:
    with fake_polygon() as fake:
        _hold(fake)
        config = _config(workspace, fake)
        result = workspace("--log-format", "json", "--config", config, "run", "--as-of", AS_OF,
                           "--since", "2024-05-01")
        demo = workspace("--log-format", "json", "run", "--provider", "demo", "--symbols", "AAPL",
                         "--as-of", AS_OF)
        failed = workspace("--log-format", "json", "run", "--provider", "polygon")
    for run in (result, demo):
        assert run.code == 0, run
        events = [json.loads(line) for line in run.err_lines]  # every line is JSON
        assert all({"ts", "level", "event"} <= set(e) for e in events)
    assert "provider_quota_wait" in {e["event"] for e in map(json.loads, result.err_lines)}
    assert "synthetic_data" in {e["event"] for e in map(json.loads, demo.err_lines)}
    assert failed.code == 78, failed
    error = json.loads(failed.err_lines[-1])
    assert error["level"] == "error" and "POLYGON_API_KEY" in error["message"] and error["exit_code"] == 78
