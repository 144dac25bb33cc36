"""The calendar's bar counts: what completeness divides by and what volatility annualises with."""

from __future__ import annotations

import numpy as np
import pytest

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
    # The in-session bars: the one holding the 09:30 open (09:00) to 15:00, as volatility counts.
    assert expected_bars(aapl, calendar, *week) == 5 * 7
    # The day after Thanksgiving 2024 closes at 13:00: 09:00, 10:00, 11:00, 12:00.
    friday = utc_date_ms("2024-11-29")
    assert expected_bars(aapl, calendar, friday, friday + 24 * HOUR - 1) == 4
    aapl_5m = Series("AAPL", AssetClass.STOCK, Timeframe.M5)
    assert expected_bars(aapl_5m, calendar, *week) == 5 * 78
    aapl_d = Series("AAPL", AssetClass.STOCK, Timeframe.D1)
    assert expected_bars(aapl_d, calendar, utc_date_ms("2024-11-25"), utc_date_ms("2024-11-29") + 5 * HOUR) == 4


def test_actions_name_themselves():
    assert CorporateAction("AAPL", "split", "2020-08-31", ratio=4.0).describe() == "split 4:1 on 2020-08-31"
    assert CorporateAction("X", "split", "2024-01-02", ratio=0.1).describe() == "split 1:10 on 2024-01-02"
    assert CorporateAction("AAPL", "dividend", "2024-02-09", amount=0.24).describe() == "dividend 0.24 on 2024-02-09"


@pytest.mark.parametrize("timeframe", [Timeframe.M5, Timeframe.M15, Timeframe.M30, Timeframe.H1])
def test_completeness_and_volatility_count_the_same_bars_a_session(timeframe):
    calendar = SessionCalendar()
    tuesday = utc_date_ms("2025-06-03")  # a regular session, 09:30-16:00 New York
    series = Series("AAPL", AssetClass.STOCK, timeframe)
    per_session = expected_bars(series, calendar, tuesday, tuesday + 24 * HOUR - 1)
    assert timeframe.periods_per_year(AssetClass.STOCK) == 252 * per_session


def test_only_in_session_bars_count_so_extended_hours_cannot_hide_holes():
    calendar = SessionCalendar()
    aapl = Series("AAPL", AssetClass.STOCK, Timeframe.H1)
    tuesday = utc_date_ms("2025-06-03")
    # Polygon's hourly bars of a day: 04:00 to 19:00 New York (08:00 to 23:00 UTC in June).
    day = np.arange(tuesday + 8 * HOUR, tuesday + 24 * HOUR, HOUR)
    inside = calendar.in_session(aapl, day)
    assert int(inside.sum()) == 7
    assert day[inside][0] == tuesday + 13 * HOUR and day[inside][-1] == tuesday + 19 * HOUR  # 09:00, 15:00
    # Saturday bars are in no session; a daily or crypto series counts every bar.
    saturday = utc_date_ms("2025-06-07") + 14 * HOUR
    assert not calendar.in_session(aapl, np.array([saturday])).any()
    btc = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.H1)
    assert calendar.in_session(btc, day).all()
