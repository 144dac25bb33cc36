"""``enrichctl verify --against-provider``: the installed CLI against the fake Polygon over
loopback, on SQLite and PostgreSQL. A damaged stored value is named (series, time, field, both
values) with exit 1, shows in ``status`` until the next ``run`` repairs it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

from .fake_polygon_thread import API_KEY, fake_polygon, polygon_config
from .workspace import AS_OF, Workspace


def _hold(fake, symbols: tuple[str, ...]) -> None:
    demo = DemoProvider(SessionCalendar())
    for symbol in symbols:
        series = Series(symbol, AssetClass.STOCK, Timeframe.D1)
        asyncio.run(fake.hold_from(demo, series, 1_704_067_200_000, 1_717_545_600_000))


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def test_a_damaged_value_fails_verify_shows_in_status_and_the_next_run_repairs_it(machine: Workspace) -> None:
    with fake_polygon() as fake:
        _hold(fake, ("AAPL", "MSFT"))
        config = machine.write("polygon.toml", polygon_config(fake, symbols=("AAPL", "MSFT")))
        base = ("--config", str(config))
        assert machine(*base, "run", "--as-of", AS_OF, "--since", "2024-01-01").code == 0
        clean = machine(*base, "verify", "--against-provider")
        assert clean.code == 0 and "all series verified" in clean.out, clean

        ts, volume = machine.query("SELECT ts, volume FROM bars WHERE symbol = 'AAPL' ORDER BY ts LIMIT 1 OFFSET 10")[0]
        machine.execute("UPDATE bars SET volume = ? WHERE symbol = 'AAPL' AND ts = ?", (volume + 100, ts))

        found = machine(*base, "verify", "--against-provider", env={"COLUMNS": "200"})
        assert found.code == 1, found
        line = next(x for x in found.out.splitlines() if "AAPL/1d" in x)
        assert _day(ts) in line and "volume" in line and "polygon" in line, found
        assert str(int(volume + 100)) in found.out and str(int(volume)) in found.out, found
        assert "problems found" in found.out
        doc = json.loads(machine(*base, "verify", "AAPL", "--against-provider", "--json").out)
        assert doc["series"][0]["mismatches"] == [
            {"at": doc["series"][0]["mismatches"][0]["at"], "field": "volume",
             "stored": int(volume + 100), "polygon": int(volume)}]
        assert API_KEY not in found.out + found.err

        status = json.loads(machine(*base, "status", "AAPL", "--json").out)
        assert "provider_mismatch" in {i["kind"] for i in status["recent_issues"]}
        assert status["series"][0]["issues"] >= 1 and status["quality_score"] < 1

        sampled = machine(*base, "verify", "--against-provider", "--sample", "1", "--json")
        assert json.loads(sampled.out)["sample"] == {"ranges": 1, "of": 2, "seed": 0}, sampled

        repaired = machine(*base, "run", "--as-of", AS_OF)
        assert repaired.code == 0, repaired
        assert machine.query("SELECT volume FROM bars WHERE symbol = 'AAPL' AND ts = ?", (ts,)) == [(volume,)]
        status = json.loads(machine(*base, "status", "AAPL", "--json").out)
        assert "provider_mismatch" not in {i["kind"] for i in status["recent_issues"]}
        assert machine(*base, "verify", "--against-provider").code == 0


def test_sample_without_against_provider_is_a_usage_error(machine: Workspace) -> None:
    result = machine("verify", "--sample", "3")
    assert result.code == 2, result
    assert "--sample" in result.err and "Traceback" not in result.err


def test_verify_against_polygon_without_a_key_exits_78(machine: Workspace) -> None:
    assert machine("run", "--symbols", "AAPL", "--provider", "demo", "--as-of", AS_OF, "--since", "2024-05-01").code == 0
    result = machine("verify", "--against-provider")
    assert result.code == 78, result
    assert "POLYGON_API_KEY" in result.err and "Traceback" not in result.err


def test_an_unreachable_provider_ends_verify_with_75_and_its_cause(machine: Workspace) -> None:
    with fake_polygon() as fake:
        _hold(fake, ("AAPL",))
        config = machine.write("polygon.toml", polygon_config(fake, symbols=("AAPL",)))
        assert machine("--config", str(config), "run", "--as-of", AS_OF, "--since", "2024-05-01").code == 0
        gone = machine.write("gone.toml", config.read_text().replace(fake.url, "http://127.0.0.1:9"))
    result = machine("--config", str(gone), "verify", "--against-provider")
    assert result.code == 75, result
    assert "provider unreachable" in result.err and "connection refused" in result.err, result
    assert "Traceback" not in result.err and API_KEY not in result.out + result.err
