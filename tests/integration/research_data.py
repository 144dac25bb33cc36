"""Data for the research tests (the API and the Parquet export): a database filled by the real
pipeline, with values the demo provider never produces, and the store's own view of a series
read through the independent driver."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from enrichctl import service
from enrichctl.calendar import utc_date_ms
from enrichctl.domain import AssetClass, Series, Timeframe

if TYPE_CHECKING:
    from conftest import Database

AS_OF = utc_date_ms("2024-06-14") + 22 * 3_600_000
SYMBOLS = ["AAPL", "MSFT", "X:BTCUSD"]
BAR_VALUES = ("open", "high", "low", "close", "volume", "vwap")
AAPL_HOLE = utc_date_ms("2024-03-01") + 5 * 3_600_000  # a day bar whose indicator row is removed


async def fill(db: Database) -> None:
    """Three symbols, 1d and 1h, by the real pipeline; then values the demo provider never
    produces, written with the independent driver: a vwap and trades NULL for more than the
    first thousand hourly bars (SQLite readers guess a column's type from its first rows) and
    one indicator NULL in every row of a series; and a bar without its indicator row."""
    settings = db.settings(SYMBOLS, timeframes=("1d", "1h"), history_days={"1d": 400, "1h": 90})
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert report.doc()["status"] == "succeeded"
    first_1h = db.scalar("SELECT min(ts) FROM bars WHERE symbol = 'X:BTCUSD' AND timeframe = '1h'")
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE bars SET vwap = NULL, trades = NULL WHERE symbol = 'X:BTCUSD' AND timeframe = '1h' "
            f"AND ts < {first_1h + 1500 * 3_600_000}")
        conn.exec_driver_sql("UPDATE indicators SET sma_200 = NULL WHERE symbol = 'MSFT' AND timeframe = '1d'")
        conn.exec_driver_sql(f"DELETE FROM indicators WHERE symbol = 'AAPL' AND timeframe = '1d' AND ts = {AAPL_HOLE}")
        conn.exec_driver_sql(
            "INSERT INTO quality_issues (run_id, symbol, timeframe, kind, severity, ts, detail, created_at) VALUES "
            f"(1, 'AAPL', '1d', 'spike', 'warning', {first_1h}, 'close up a third in one bar', {AS_OF}), "
            f"(NULL, 'MSFT', '1h', 'stale', 'error', NULL, 'no bar since Friday', {AS_OF + 1})")


def expected_frame(db: Database, symbol: str, timeframe: Timeframe, indicators: bool) -> pd.DataFrame:
    """The stored series as the API should give it, built from the independent driver's rows."""
    series = Series(symbol, AssetClass.for_symbol(symbol), timeframe)
    bars = db.bars(series)
    columns = {name: getattr(bars, name) for name in (*BAR_VALUES, "trades")}
    if indicators:
        ind_ts, values = db.indicators(series)
        columns.update({n: pd.Series(v, index=ind_ts).reindex(bars.ts).to_numpy() for n, v in values.items()})
    return pd.DataFrame(columns, index=pd.Index(bars.ts, name="ts"))
