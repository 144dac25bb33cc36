"""Technical indicators over a series' bars, computed by TA-Lib.

Definition: an indicator's value at a bar is TA-Lib's value for it over the whole stored series.
``IndicatorSet.compute_tail`` reproduces those values for new bars from a bounded tail of
``warmup`` stored bars (within ~1e-15 relative), so an incremental run never rereads history.

Config names (``settings.indicators``) and the columns they produce::

    sma_N                 sma_N                    TA-Lib SMA(close, N)
    ema_N                 ema_N                    TA-Lib EMA(close, N)
    rsi_N                 rsi_N                    TA-Lib RSI(close, N)
    atr_N                 atr_N                    TA-Lib ATR(high, low, close, N)
    macd_F_S_G            macd_F_S_G, macd_signal_F_S_G, macd_hist_F_S_G
    bbands_N_K            bb_upper_N_K, bb_middle_N_K, bb_lower_N_K   (SMA, K standard deviations)
    log_return            log_return               ln(close_t / close_t-1)
    volatility_N          volatility_N             sample std (ddof=1) of the last N log returns,
                                                   times sqrt(periods per year)
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from enrichctl.domain import Bars
from enrichctl.indicatorspec import KINDS, IndicatorSpec, parse_indicator


def _ta():
    """TA-Lib, imported on first use, and without pandas or polars: TA-Lib imports them only to
    accept their Series, which we never pass, and pandas alone is most of a second of a run's
    start-up (a run reads the NYSE calendar from its cache, without pandas)."""
    if "talib" not in sys.modules:
        blocked = [name for name in ("pandas", "polars") if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # "import pandas" fails: TA-Lib goes on without it
        try:
            import talib  # noqa: F401
        finally:
            for name in blocked:
                del sys.modules[name]
    return sys.modules["talib"]


@dataclass(frozen=True, slots=True)
class _Inputs:
    """The price columns of one computation, as C-contiguous float64 (what TA-Lib wants)."""

    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    periods_per_year: float


_Compute = Callable[[tuple[int, ...], _Inputs], tuple[np.ndarray, ...]]


def _log_returns(close: np.ndarray) -> np.ndarray:
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] > 1:
        # A zero price gives inf/NaN in its column rather than a warning per batch.
        with np.errstate(divide="ignore", invalid="ignore"):
            out[1:] = np.log(close[1:] / close[:-1])
    return out


def _volatility(params: tuple[int, ...], x: _Inputs) -> tuple[np.ndarray]:
    (window,) = params
    returns = _log_returns(x.close)
    out = np.full(returns.shape[0], np.nan)
    if returns.shape[0] > window:
        # Exact windows (two-pass std per window), not running sums: a value depends only on its
        # own window, so a tail computation reproduces it bit for bit.
        windows = np.lib.stride_tricks.sliding_window_view(returns[1:], window)
        out[window:] = windows.std(axis=1, ddof=1) * math.sqrt(x.periods_per_year)
    return (out,)


def _macd(params: tuple[int, ...], x: _Inputs) -> tuple[np.ndarray, ...]:
    fast, slow, signal = params
    return _ta().MACD(x.close, fastperiod=fast, slowperiod=slow, signalperiod=signal)


def _bbands(params: tuple[int, ...], x: _Inputs) -> tuple[np.ndarray, ...]:
    period, nbdev = params
    return _ta().BBANDS(
        x.close, timeperiod=period, nbdevup=nbdev, nbdevdn=nbdev, matype=_ta().MA_Type.SMA
    )


_COMPUTE: dict[str, _Compute] = {
    "sma": lambda p, x: (_ta().SMA(x.close, p[0]),),
    "ema": lambda p, x: (_ta().EMA(x.close, p[0]),),
    "rsi": lambda p, x: (_ta().RSI(x.close, p[0]),),
    "atr": lambda p, x: (_ta().ATR(x.high, x.low, x.close, p[0]),),
    "macd": _macd,
    "bbands": _bbands,
    "log_return": lambda p, x: (_log_returns(x.close),),
    "volatility": _volatility,
}
assert set(_COMPUTE) == set(KINDS), "every kind parse_indicator accepts is computed here"


class IndicatorSet:
    """The configured indicators of a run: their columns, warm-up and one-call computation."""

    def __init__(self, names: Sequence[str]) -> None:
        unique = tuple(dict.fromkeys(names))  # a name listed twice is one set of columns
        self.specs: tuple[IndicatorSpec, ...] = tuple(parse_indicator(n) for n in unique)
        self.columns: tuple[str, ...] = tuple(c for spec in self.specs for c in spec.columns)
        self.warmup: int = max((spec.warmup for spec in self.specs), default=0)
        digest = hashlib.sha256("\n".join(sorted(unique)).encode()).hexdigest()
        self.fingerprint: str = digest[:16]

    def __repr__(self) -> str:
        return f"IndicatorSet({[spec.name for spec in self.specs]!r})"

    def compute(self, bars: Bars, periods_per_year: float) -> dict[str, np.ndarray]:
        """Every column over the whole of ``bars`` (sorted by ts): float64, len(bars), NaN where
        undefined (the lookback region). Volume is not used: index bars without it are fine."""
        if not (math.isfinite(periods_per_year) and periods_per_year > 0):
            raise ValueError(f"periods_per_year must be positive, got {periods_per_year!r}")
        inputs = _Inputs(
            high=np.ascontiguousarray(bars.high, dtype=np.float64),
            low=np.ascontiguousarray(bars.low, dtype=np.float64),
            close=np.ascontiguousarray(bars.close, dtype=np.float64),
            periods_per_year=float(periods_per_year),
        )
        out: dict[str, np.ndarray] = {}
        for spec in self.specs:
            values = _COMPUTE[spec.kind](spec.params, inputs)
            out.update(zip(spec.columns, values, strict=True))
        return out

    def compute_tail(
        self, bars: Bars, first_new: int, periods_per_year: float
    ) -> dict[str, np.ndarray]:
        """Every column for ``bars[first_new:]`` only. ``bars[:first_new]`` must be the last
        ``warmup`` stored bars (or all of them when fewer are stored) for the values to equal
        ``compute`` over the whole stored series."""
        if not 0 <= first_new <= len(bars):
            raise ValueError(f"first_new {first_new} is outside 0..{len(bars)}")
        full = self.compute(bars, periods_per_year)
        return {column: values[first_new:].copy() for column, values in full.items()}
