"""The script a user would write instead of enrichctl: the official Polygon client
(``polygon-api-client``, ``RESTClient.list_aggs``), pandas, TA-Lib and ``DataFrame.to_sql``
into SQLite, on 5 threads. It checks nothing and is not idempotent (run it twice and the rows
are there twice); it is here because users compare the wall clock with it.

    python bench/peer_polygon.py --base URL --key KEY --db peer.db --symbols AAPL,MSFT \
        --since 2016-01-01 --until 2025-05-30

Prints one JSON line: bars and indicator rows written.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import talib
from polygon import RESTClient

THREADS = 5
write_lock = threading.Lock()  # one SQLite writer at a time ("database is locked" otherwise)


def indicators(df: pd.DataFrame) -> pd.DataFrame:
    """The same indicators enrichctl computes by default."""
    close, high, low = df["close"].to_numpy(), df["high"].to_numpy(), df["low"].to_numpy()
    out = pd.DataFrame({"symbol": df["symbol"], "ts": df["timestamp"]})
    for n in (20, 50, 200):
        out[f"sma_{n}"] = talib.SMA(close, n)
    for n in (12, 26):
        out[f"ema_{n}"] = talib.EMA(close, n)
    out["rsi_14"] = talib.RSI(close, 14)
    out["macd"], out["macd_signal"], out["macd_hist"] = talib.MACD(close, 12, 26, 9)
    out["bb_upper"], out["bb_middle"], out["bb_lower"] = talib.BBANDS(close, 20, 2, 2)
    out["atr_14"] = talib.ATR(high, low, close, 14)
    log_return = np.log(df["close"] / df["close"].shift(1))
    out["log_return"] = log_return
    out["volatility_20"] = log_return.rolling(20).std() * np.sqrt(252)
    return out


def one_symbol(client: RESTClient, db: str, symbol: str, since: str, until: str) -> tuple[int, int]:
    aggs = list(client.list_aggs(symbol, 1, "day", since, until, limit=50_000))
    df = pd.DataFrame(aggs)
    df.insert(0, "symbol", symbol)
    ind = indicators(df)
    with write_lock:
        conn = sqlite3.connect(db, timeout=60)
        try:
            df.to_sql("bars", conn, if_exists="append", index=False)
            ind.to_sql("indicators", conn, if_exists="append", index=False)
            conn.commit()
        finally:
            conn.close()
    return len(df), len(ind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--symbols", required=True)
    parser.add_argument("--since", required=True)
    parser.add_argument("--until", required=True)
    args = parser.parse_args()
    client = RESTClient(api_key=args.key, base=args.base, num_pools=THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        done = list(pool.map(lambda s: one_symbol(client, args.db, s, args.since, args.until),
                             args.symbols.split(",")))
    print(json.dumps({"bars": sum(b for b, _ in done), "indicator_rows": sum(i for _, i in done)}))


if __name__ == "__main__":
    main()
