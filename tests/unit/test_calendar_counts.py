"""The calendar's bar counts: what completeness divides by and what volatility annualises with."""

from __future__ import annotations

from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import AssetClass, Series, Timeframe
from enrichctl.pipeline.score import expected_bars
from enrichctl.providers.reference import CorporateAction

HOUR = 3_600_000


def test_volatility_is_annualised_with_the_bars_the_calendar_has():
    # An NYSE session holds 7 hourly bars (09:00 .. 15:00 New York) and 78 of 5 minutes.
    assert Timeframe.H1.periods_per_year(AssetClass.STOCK) == 252 * 7
    assert Timeframe.M5.periods_per_year(AssetClass.STOCK) == 252 * 78
    assert Timeframe.H1.periods_per_year(AssetClass.CRYPTO) == 365 * 24
    assert Timeframe.H1.periods_per_year(AssetClass.FOREX) == 260 * 24
    assert Timeframe.D1.periods_per_year(AssetClass.STOCK) == 252


def test_expected_bars_follow_each_asset_class_calendar():
    calendar = SessionCalendar()
    monday = utc_date_ms("2025-06-02")
    week = (monday - 2 * 24 * HOUR, monday + 5 * 24 * HOUR - 1)  # Saturday to Friday night
    fx = Series("C:EURUSD", AssetClass.FOREX, Timeframe.H1)
    assert expected_bars(fx, calendar, *week) == 5 * 24  # Sunday 17:00 to Friday 17:00
    btc = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.H1)
    assert expected_bars(btc, calendar, *week) == 7 * 24
    aapl = Series("AAPL", AssetClass.STOCK, Timeframe.H1)
    assert expected_bars(aapl, calendar, *week) == 5 * 6  # bars starting inside the session
    # The day after Thanksgiving 2024 closes at 13:00: 10:00, 11:00, 12:00.
    friday = utc_date_ms("2024-11-29")
    assert expected_bars(aapl, calendar, friday, friday + 24 * HOUR - 1) == 3
    aapl_d = Series("AAPL", AssetClass.STOCK, Timeframe.D1)
    assert expected_bars(aapl_d, calendar, utc_date_ms("2024-11-25"), utc_date_ms("2024-11-29") + 5 * HOUR) == 4


def test_actions_name_themselves():
    assert CorporateAction("AAPL", "split", "2020-08-31", ratio=4.0).describe() == "split 4:1 on 2020-08-31"
    assert CorporateAction("X", "split", "2024-01-02", ratio=0.1).describe() == "split 1:10 on 2024-01-02"
    assert CorporateAction("AAPL", "dividend", "2024-02-09", amount=0.24).describe() == "dividend 0.24 on 2024-02-09"
