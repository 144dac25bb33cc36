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
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from enrichctl.domain import Bars

MIN_PERIOD = 2
MAX_PERIOD = 1000
MIN_NBDEV = 1
MAX_NBDEV = 10

COLUMN_RE = re.compile(r"[a-z][a-z0-9_]*")  # used with fullmatch: "$" would let "\n" in

# EMA-type smoothers (EMA, MACD, Wilder's RSI and ATR) remember their seed forever: a tail
# computation seeds from the tail's first bars instead of the true running value, and that error
# shrinks by ``decay`` per bar. The seed error is at most of the order of the price itself, so
# once decay**n < 1e-18 it sits ~100x below one ulp of the value (2.2e-16 relative) and the two
# computations agree to double precision, even where the value itself is near zero (a MACD
# crossing). Hence warmup = TA-Lib lookback + n(decay), n = ceil(ln(1e-18) / ln(decay)):
# EMA decay (p-1)/(p+1) -> ema_26: 25 + 539 bars; Wilder decay (p-1)/p -> rsi_14: 14 + 560.
SEED_RESIDUAL = 1e-18


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


def _smoothing_bars(decay: float) -> int:
    """Bars after which a seed error scaled by ``decay`` per bar is below ``SEED_RESIDUAL``."""
    return math.ceil(math.log(SEED_RESIDUAL) / math.log(decay))


def _ema_bars(period: int) -> int:
    return _smoothing_bars((period - 1) / (period + 1))


def _wilder_bars(period: int) -> int:
    return _smoothing_bars((period - 1) / period)


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """One configured indicator: its config name, TA-Lib kind, parameters and DB columns."""

    name: str
    kind: str
    params: tuple[int, ...]
    columns: tuple[str, ...]
    warmup: int  # stored bars needed before a bar for a tail computation to equal the full one


@dataclass(frozen=True, slots=True)
class _Inputs:
    """The price columns of one computation, as C-contiguous float64 (what TA-Lib wants)."""

    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    periods_per_year: float


_Compute = Callable[[tuple[int, ...], _Inputs], tuple[np.ndarray, ...]]


@dataclass(frozen=True, slots=True)
class _Kind:
    usage: str  # e.g. "macd_FAST_SLOW_SIGNAL"
    arity: int
    columns: Callable[[str, tuple[int, ...]], tuple[str, ...]]
    warmup: Callable[[tuple[int, ...]], int]
    compute: _Compute


def _own_column(name: str, params: tuple[int, ...]) -> tuple[str, ...]:
    return (name,)


def _suffix(params: tuple[int, ...]) -> str:
    return "_".join(str(p) for p in params)


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


_KINDS: dict[str, _Kind] = {
    "sma": _Kind(
        "sma_N", 1, _own_column, lambda p: p[0] - 1, lambda p, x: (_ta().SMA(x.close, p[0]),)
    ),
    "ema": _Kind(
        "ema_N",
        1,
        _own_column,
        lambda p: p[0] - 1 + _ema_bars(p[0]),
        lambda p, x: (_ta().EMA(x.close, p[0]),),
    ),
    "rsi": _Kind(
        "rsi_N",
        1,
        _own_column,
        lambda p: p[0] + _wilder_bars(p[0]),
        lambda p, x: (_ta().RSI(x.close, p[0]),),
    ),
    "atr": _Kind(
        "atr_N",
        1,
        _own_column,
        lambda p: p[0] + _wilder_bars(p[0]),
        lambda p, x: (_ta().ATR(x.high, x.low, x.close, p[0]),),
    ),
    "macd": _Kind(
        "macd_FAST_SLOW_SIGNAL",
        3,
        lambda name, p: (name, f"macd_signal_{_suffix(p)}", f"macd_hist_{_suffix(p)}"),
        # Two smoothers in series (line, then signal): let each one's seed fade in turn.
        lambda p: (p[1] - 1) + (p[2] - 1) + _ema_bars(p[1]) + _ema_bars(p[2]),
        _macd,
    ),
    "bbands": _Kind(
        "bbands_N_K",
        2,
        lambda name, p: tuple(f"bb_{band}_{_suffix(p)}" for band in ("upper", "middle", "lower")),
        lambda p: p[0] - 1,
        _bbands,
    ),
    "log_return": _Kind(
        "log_return", 0, _own_column, lambda p: 1, lambda p, x: (_log_returns(x.close),)
    ),
    "volatility": _Kind("volatility_N", 1, _own_column, lambda p: p[0], _volatility),
}

_EXPECTED = ", ".join(kind.usage for kind in _KINDS.values())


def parse_indicator(text: str) -> IndicatorSpec:
    """The spec of a config name such as ``rsi_14``; ValueError with a one-line reason if bad."""
    if not isinstance(text, str) or not COLUMN_RE.fullmatch(text):
        raise ValueError(
            f"invalid indicator {text!r}: use lowercase letters, digits and '_', one of {_EXPECTED}"
        )
    kind_name = next(
        (k for k in sorted(_KINDS, key=len, reverse=True) if text == k or text.startswith(k + "_")),
        None,
    )
    if kind_name is None:
        raise ValueError(f"unknown indicator {text!r}: expected one of {_EXPECTED}")
    kind = _KINDS[kind_name]
    rest = text[len(kind_name) + 1 :]
    raw = rest.split("_") if rest else []
    if len(raw) != kind.arity or not all(part.isdigit() for part in raw):
        numbers = " (whole numbers)" if kind.arity else ""
        raise ValueError(f"invalid indicator {text!r}: expected {kind.usage}{numbers}")
    params = tuple(_param(text, part) for part in raw)
    _check_params(text, kind_name, params)
    return IndicatorSpec(
        name=text,
        kind=kind_name,
        params=params,
        columns=kind.columns(text, params),
        warmup=kind.warmup(params),
    )


def _param(text: str, part: str) -> int:
    if len(part) > 9:  # far out of any range; keeps int() and the message small
        raise ValueError(f"invalid indicator {text!r}: {part[:9]}... is far too large")
    value = int(part)
    if str(value) != part:  # one canonical name per indicator: "sma_020" would be a 2nd column
        raise ValueError(f"invalid indicator {text!r}: write {value} without leading zeros")
    return value


def _check_params(text: str, kind: str, params: tuple[int, ...]) -> None:
    periods = params[:1] if kind == "bbands" else params
    for period in periods:
        if not MIN_PERIOD <= period <= MAX_PERIOD:
            raise ValueError(
                f"invalid indicator {text!r}: period {period} is outside {MIN_PERIOD}..{MAX_PERIOD}"
            )
    if kind == "macd" and params[0] >= params[1]:
        raise ValueError(
            f"invalid indicator {text!r}: the fast period ({params[0]}) must be shorter than "
            f"the slow one ({params[1]})"
        )
    if kind == "bbands" and not MIN_NBDEV <= params[1] <= MAX_NBDEV:
        raise ValueError(
            f"invalid indicator {text!r}: the band width {params[1]} is outside "
            f"{MIN_NBDEV}..{MAX_NBDEV} standard deviations"
        )


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
            values = _KINDS[spec.kind].compute(spec.params, inputs)
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
