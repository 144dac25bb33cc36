"""``status SYMBOL`` names the corporate actions the provider listed (splits and dividends) and
says what the stored prices are: split-adjusted, dividends not included. The installed CLI
against the fake Polygon over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

from .fake_polygon_thread import fake_polygon, polygon_config
from .workspace import AS_OF, Workspace

NOTE = "dividends are listed but not included in the adjusted series"


def test_status_of_a_symbol_shows_its_splits_and_dividends(machine: Workspace) -> None:
    with fake_polygon() as fake:
        demo = DemoProvider(SessionCalendar())
        for symbol in ("AAPL", "MSFT"):
            series = Series(symbol, AssetClass.STOCK, Timeframe.D1)
            asyncio.run(fake.hold_from(demo, series, 1_704_067_200_000, 1_717_545_600_000))
        # Listed on the day the run looks back to (a new database checks from today on).
        fake.split("AAPL", "2024-06-04", 4)
        fake.dividends.append({"ticker": "AAPL", "ex_dividend_date": "2024-06-10", "cash_amount": 0.25})
        fake.dividends.append({"ticker": "MSFT", "ex_dividend_date": "2024-06-11", "cash_amount": 0.75})
        config = machine.write("polygon.toml", polygon_config(fake, symbols=("AAPL", "MSFT")))
        base = ("--config", str(config))
        run = machine(*base, "run", "--as-of", AS_OF, "--since", "2024-01-01")
        assert run.code == 0, run

        table = machine(*base, "status", "AAPL", env={"COLUMNS": "120"})
        doc = json.loads(machine(*base, "status", "AAPL", "--json").out)

    assert table.code == 0, table
    assert "corporate actions" in table.out, table
    assert "split 4:1 on 2024-06-04" in table.out and "dividend 0.25 on 2024-06-10" in table.out, table
    assert "MSFT" not in table.out and "0.75" not in table.out
    assert NOTE in " ".join(table.out.split()), table
    assert doc["corporate_actions"] == [
        {"kind": "dividend", "ex_date": "2024-06-10", "ratio": None, "amount": 0.25,
         "description": "dividend 0.25 on 2024-06-10"},
        {"kind": "split", "ex_date": "2024-06-04", "ratio": 4.0, "amount": None,
         "description": "split 4:1 on 2024-06-04"},
    ]
    assert NOTE in doc["adjustment"] and "split-adjusted" in doc["adjustment"]
