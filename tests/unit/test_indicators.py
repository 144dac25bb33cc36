"""Indicators: published ground truth, TA-Lib wiring, incremental == full, config names.

Reference data lives in <repo>/../shared/reference/indicators (see its README.md for which files
are StockCharts ground truth and which only follow the ``ta`` library's conventions).
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
import talib

from enrichctl.domain import MS_PER_DAY, Bars
from enrichctl.pipeline.indicators import IndicatorSet, parse_indicator
from enrichctl.settings import DEFAULT_INDICATORS

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "indicators"
TOLERANCE = 1e-9  # DESIGN.md: incremental values equal the full recompute within 1e-9 relative
# Extra specs beyond the defaults: other periods, a fast/slow MACD, short windows, wide bands.
EXTRA_INDICATORS = ("ema_50", "rsi_2", "atr_3", "macd_5_35_5", "bbands_10_3", "volatility_5")

# StockCharts ChartSchool RSI(14) worked example, published values (2 dp) for rows 14..32 of
# cs-rsi.csv's Close column. The sheet's own RSI column is NOT these (see the README).
STOCKCHARTS_RSI_14 = (
    70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38,
    54.71, 50.42, 39.99, 41.46, 41.87, 45.46, 37.30, 33.08, 37.77,
)  # fmt: skip


def read_csv(path: Path) -> dict[str, list[str]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [row[key] for row in rows] for key in rows[0]}


def bars_of(close, high=None, low=None, open_=None, volume=None) -> Bars:
    close = np.asarray(close, dtype=np.float64)
    ts = np.arange(close.shape[0], dtype=np.int64) * MS_PER_DAY
    return Bars.from_columns(
        ts,
        close if open_ is None else open_,
        close if high is None else high,
        close if low is None else low,
        close,
        volume,
    )


def floats(values: list[str]) -> np.ndarray:
    return np.array([float(v) if v else np.nan for v in values])


def relative_gap(full: np.ndarray, incremental: np.ndarray) -> float:
    """max |a-b| / max(|a|, |b|, 1e-3) over defined values: <= 1e-9 means within 1e-9 relative,
    with a 1e-12 absolute floor for values at (or crossing) zero. NaN positions must match."""
    np.testing.assert_array_equal(np.isnan(full), np.isnan(incremental), err_msg="NaN positions")
    defined = ~np.isnan(full)
    a, b = full[defined], incremental[defined]
    if a.size == 0:
        return 0.0
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-3)
    return float(np.max(np.abs(a - b) / scale))


@pytest.fixture(scope="module")
def ford() -> Bars:
    cols = read_csv(REFERENCE / "ta-lib-python" / "ford_2012.csv")
    return bars_of(
        floats(cols["close"]),
        high=floats(cols["high"]),
        low=floats(cols["low"]),
        open_=floats(cols["open"]),
        volume=floats(cols["volume"]),
    )


@pytest.fixture(scope="module")
def walk() -> Bars:
    """3,000 daily bars of a seeded random walk near 100; its MACD crosses zero many times."""
    rng = np.random.default_rng(20240607)
    n = 3000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, 0.004, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, 0.004, n)))
    volume = rng.integers(1_000, 1_000_000, n).astype(np.float64)
    return bars_of(close, high=high, low=low, open_=open_, volume=volume)


def grow_incrementally(
    indicators: IndicatorSet, bars: Bars, tail: int, seed: int = 1
) -> tuple[dict[str, np.ndarray], int]:
    """Replays daily runs: each step stores 1..60 new bars, computing only them from the last
    ``tail`` stored bars (all of them while fewer are stored). Returns the stitched columns."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in indicators.columns}
    stored = steps = 0
    while stored < len(bars):
        new = min(60, int(rng.geometric(1 / 20)), len(bars) - stored)
        start = max(0, stored - tail)
        values = indicators.compute_tail(bars.take(slice(start, stored + new)), stored - start, 252)
        for column, column_values in values.items():
            assert column_values.shape == (new,), column
            parts[column].append(column_values)
        stored += new
        steps += 1
    return {c: np.concatenate(p) for c, p in parts.items()}, steps


# --- ground truth ---------------------------------------------------------------------------


def test_rsi_matches_stockcharts_published_values() -> None:
    cols = read_csv(REFERENCE / "bukosabino-ta" / "cs-rsi.csv")
    rsi = IndicatorSet(["rsi_14"]).compute(bars_of(floats(cols["Close"])), 252)["rsi_14"]

    assert np.isnan(rsi[:14]).all()
    published = np.array(STOCKCHARTS_RSI_14)
    np.testing.assert_allclose(rsi[14:], published, rtol=0, atol=0.005 + 1e-9)


def test_bollinger_bands_match_stockcharts_sheet() -> None:
    cols = read_csv(REFERENCE / "bukosabino-ta" / "cs-bbands.csv")
    out = IndicatorSet(["bbands_20_2"]).compute(bars_of(floats(cols["Close"])), 252)

    expected = {
        "bb_upper_20_2": floats(cols["HighBand"]),
        "bb_middle_20_2": floats(cols["MiddleBand"]),
        "bb_lower_20_2": floats(cols["LowBand"]),
    }
    for column, sheet in expected.items():
        np.testing.assert_array_equal(np.isnan(out[column]), np.isnan(sheet), err_msg=column)
        np.testing.assert_allclose(out[column], sheet, rtol=0, atol=1e-6, err_msg=column)


def test_columns_are_the_direct_talib_calls(ford: Bars) -> None:
    out = IndicatorSet(DEFAULT_INDICATORS).compute(ford, 252)
    c, h, lo = ford.close, ford.high, ford.low
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2, talib.MA_Type.SMA)
    expected = {
        "sma_20": talib.SMA(c, 20),
        "sma_50": talib.SMA(c, 50),
        "sma_200": talib.SMA(c, 200),
        "ema_12": talib.EMA(c, 12),
        "ema_26": talib.EMA(c, 26),
        "rsi_14": talib.RSI(c, 14),
        "macd_12_26_9": macd,
        "macd_signal_12_26_9": signal,
        "macd_hist_12_26_9": hist,
        "bb_upper_20_2": upper,
        "bb_middle_20_2": middle,
        "bb_lower_20_2": lower,
        "atr_14": talib.ATR(h, lo, c, 14),
    }
    for column, values in expected.items():
        np.testing.assert_array_equal(out[column], values, err_msg=column)
    assert set(out) == set(expected) | {"log_return", "volatility_20"}
    assert all(v.dtype == np.float64 and v.shape == (len(ford),) for v in out.values())


def test_log_return_and_volatility_match_a_plain_reference(ford: Bars) -> None:
    out = IndicatorSet(["log_return", "volatility_20"]).compute(ford, 252)
    close = ford.close.tolist()
    returns = [math.nan] + [math.log(b / a) for a, b in zip(close[:-1], close[1:], strict=True)]
    volatility = [math.nan] * 20 + [
        statistics.stdev(returns[t - 19 : t + 1]) * math.sqrt(252) for t in range(20, len(close))
    ]

    np.testing.assert_allclose(out["log_return"], returns, rtol=1e-12, atol=0)
    np.testing.assert_allclose(out["volatility_20"], volatility, rtol=1e-12, atol=0)
    # Ford's 2012 realised volatility was in the 20-40% a year range.
    assert 0.15 < np.nanmedian(out["volatility_20"]) < 0.5


def test_index_bars_without_volume_still_get_price_indicators(ford: Bars) -> None:
    no_volume = Bars.from_columns(ford.ts, ford.open, ford.high, ford.low, ford.close)
    indicators = IndicatorSet(DEFAULT_INDICATORS)

    with_volume, without = indicators.compute(ford, 252), indicators.compute(no_volume, 252)
    for column in indicators.columns:
        np.testing.assert_array_equal(without[column], with_volume[column], err_msg=column)
    assert not np.isnan(without["atr_14"][14:]).any()


def test_short_and_empty_series_are_nan_until_defined() -> None:
    indicators = IndicatorSet(DEFAULT_INDICATORS)
    short = indicators.compute(bars_of(np.linspace(10.0, 12.0, 30)), 252)
    assert np.isnan(short["sma_50"]).all() and np.isnan(short["macd_12_26_9"]).all()
    assert np.isnan(short["sma_20"][:19]).all() and not np.isnan(short["sma_20"][19:]).any()

    empty = indicators.compute(Bars.empty(), 252)
    assert set(empty) == set(indicators.columns)
    assert all(v.shape == (0,) for v in empty.values())


# --- incremental == full --------------------------------------------------------------------


def test_incremental_runs_equal_the_full_recompute(walk: Bars) -> None:
    indicators = IndicatorSet(DEFAULT_INDICATORS + EXTRA_INDICATORS)
    full = indicators.compute(walk, 252)
    macd = full["macd_12_26_9"]
    assert np.nanmin(np.abs(macd)) < 1e-3 < np.nanmax(np.abs(macd))  # zero crossings are in

    incremental, steps = grow_incrementally(indicators, walk, indicators.warmup)

    assert steps >= 100
    gaps = {c: relative_gap(full[c], incremental[c]) for c in indicators.columns}
    worst = max(gaps, key=gaps.__getitem__)
    assert gaps[worst] <= TOLERANCE, f"{worst}: {gaps[worst]:.3g} (all: {gaps})"


@pytest.mark.parametrize("name", DEFAULT_INDICATORS + EXTRA_INDICATORS)
def test_each_indicators_own_warmup_is_enough(walk: Bars, name: str) -> None:
    indicators = IndicatorSet([name])
    full = indicators.compute(walk, 252)

    incremental, _ = grow_incrementally(indicators, walk, indicators.warmup, seed=2)

    for column in indicators.columns:
        gap = relative_gap(full[column], incremental[column])
        assert gap <= TOLERANCE, f"{column}: {gap:.3g} with a tail of {indicators.warmup}"


@pytest.mark.parametrize("name", ["rsi_14", "ema_26", "macd_12_26_9"])
def test_a_tail_shorter_than_warmup_would_be_caught(walk: Bars, name: str) -> None:
    indicators = IndicatorSet([name])
    full = indicators.compute(walk, 252)

    incremental, _ = grow_incrementally(indicators, walk, indicators.warmup // 10)

    # The seed's error has not decayed: far beyond the tolerance the real test enforces.
    assert relative_gap(full[name], incremental[name]) > 1e3 * TOLERANCE


def test_compute_tail_returns_only_the_new_bars(walk: Bars) -> None:
    indicators = IndicatorSet(["sma_20", "macd_12_26_9"])
    window = walk.take(slice(0, 900))

    tail = indicators.compute_tail(window, 850, 252)

    assert set(tail) == set(indicators.columns)
    full = indicators.compute(window, 252)
    for column, values in tail.items():
        np.testing.assert_array_equal(values, full[column][850:], err_msg=column)
    with pytest.raises(ValueError, match="first_new"):
        indicators.compute_tail(window, 901, 252)
    with pytest.raises(ValueError, match="periods_per_year"):
        indicators.compute(window, 0.0)


# --- names, columns, fingerprint ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "params", "columns"),
    [
        ("sma_20", "sma", (20,), ("sma_20",)),
        ("ema_12", "ema", (12,), ("ema_12",)),
        ("rsi_14", "rsi", (14,), ("rsi_14",)),
        ("atr_14", "atr", (14,), ("atr_14",)),
        (
            "macd_12_26_9",
            "macd",
            (12, 26, 9),
            ("macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9"),
        ),
        ("bbands_20_2", "bbands", (20, 2), ("bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2")),
        ("log_return", "log_return", (), ("log_return",)),
        ("volatility_20", "volatility", (20,), ("volatility_20",)),
        ("sma_1000", "sma", (1000,), ("sma_1000",)),
    ],
)
def test_parse_indicator_accepts_configured_names(name, kind, params, columns) -> None:
    spec = parse_indicator(name)

    assert (spec.name, spec.kind, spec.params, spec.columns) == (name, kind, params, columns)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("foo_3", "unknown indicator 'foo_3': expected one of sma_N, ema_N"),
        ("sma_0", "period 0 is outside 2..1000"),
        ("rsi_1", "period 1 is outside 2..1000"),
        ("ema_1001", "period 1001 is outside 2..1000"),
        ("sma_99999999999999999999", "far too large"),
        ("sma_-5", "use lowercase letters, digits and '_'"),
        ("macd_26_12_9", "fast period (26) must be shorter than the slow one (12)"),
        ("macd_12_12_9", "fast period (12) must be shorter"),
        ("macd_12_26", "expected macd_FAST_SLOW_SIGNAL"),
        ("bbands_20_0", "band width 0 is outside 1..10"),
        ("SMA_20", "use lowercase letters"),
        ("sma_20; drop table bars", "use lowercase letters"),
        ("sma_20 ", "use lowercase letters"),
        ("sma_20\n", "use lowercase letters"),
        ("sma", "expected sma_N"),
        ("sma_20x", "expected sma_N"),
        ("sma_020", "write 20 without leading zeros"),
        ("log_return_5", "expected log_return"),
        ("", "invalid indicator ''"),
    ],
)
def test_parse_indicator_rejects_bad_names_readably(name: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_indicator(name)

    text = str(caught.value)
    assert message in text and "\n" not in text


def test_set_columns_warmup_and_fingerprint() -> None:
    defaults = IndicatorSet(DEFAULT_INDICATORS)
    assert len(defaults.columns) == len(set(defaults.columns)) == 15
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", c) for c in defaults.columns)  # SQL-safe
    assert defaults.warmup == max(spec.warmup for spec in defaults.specs)
    # EMA-type warm-up is long (hundreds of bars), windowed ones are just their window.
    assert parse_indicator("sma_200").warmup == 199
    assert parse_indicator("volatility_20").warmup == 20
    assert 500 < parse_indicator("rsi_14").warmup < 1000

    reordered = IndicatorSet(list(reversed(DEFAULT_INDICATORS)))
    assert reordered.fingerprint == defaults.fingerprint
    assert IndicatorSet(DEFAULT_INDICATORS + ("ema_50",)).fingerprint != defaults.fingerprint
    assert IndicatorSet(DEFAULT_INDICATORS[1:]).fingerprint != defaults.fingerprint
    assert IndicatorSet(["sma_20", "sma_20"]).columns == ("sma_20",)
