"""Indicator config names (``settings.indicators``): parsing, columns and warm-up.

Plain data without TA-Lib, so that ``settings`` validates names without importing the pipeline;
``pipeline/indicators.py`` computes what a spec names (its docstring lists every name's columns).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

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


def _own_column(name: str, params: tuple[int, ...]) -> tuple[str, ...]:
    return (name,)


def _suffix(params: tuple[int, ...]) -> str:
    return "_".join(str(p) for p in params)


@dataclass(frozen=True, slots=True)
class _Kind:
    usage: str  # e.g. "macd_FAST_SLOW_SIGNAL"
    arity: int
    columns: Callable[[str, tuple[int, ...]], tuple[str, ...]]
    warmup: Callable[[tuple[int, ...]], int]


_KINDS: dict[str, _Kind] = {
    "sma": _Kind("sma_N", 1, _own_column, lambda p: p[0] - 1),
    "ema": _Kind("ema_N", 1, _own_column, lambda p: p[0] - 1 + _ema_bars(p[0])),
    "rsi": _Kind("rsi_N", 1, _own_column, lambda p: p[0] + _wilder_bars(p[0])),
    "atr": _Kind("atr_N", 1, _own_column, lambda p: p[0] + _wilder_bars(p[0])),
    "macd": _Kind(
        "macd_FAST_SLOW_SIGNAL",
        3,
        lambda name, p: (name, f"macd_signal_{_suffix(p)}", f"macd_hist_{_suffix(p)}"),
        # Two smoothers in series (line, then signal): let each one's seed fade in turn.
        lambda p: (p[1] - 1) + (p[2] - 1) + _ema_bars(p[1]) + _ema_bars(p[2]),
    ),
    "bbands": _Kind(
        "bbands_N_K",
        2,
        lambda name, p: tuple(f"bb_{band}_{_suffix(p)}" for band in ("upper", "middle", "lower")),
        lambda p: p[0] - 1,
    ),
    "log_return": _Kind("log_return", 0, _own_column, lambda p: 1),
    "volatility": _Kind("volatility_N", 1, _own_column, lambda p: p[0]),
}
KINDS = tuple(_KINDS)  # every kind ``parse_indicator`` accepts; ``indicators`` computes each


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
