"""Plain typed data shared by every layer: symbols, timeframes, series, bars, statuses.

No I/O here. Timestamps are UTC epoch milliseconds (``int``) everywhere; a bar's ``ts`` is the
start of its interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import repeat

import numpy as np

MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000

SYMBOL_RE = re.compile(r"^(?:[XCI]:)?[A-Z0-9][A-Z0-9.\-]{0,19}$")


class AssetClass(StrEnum):
    STOCK = "stock"
    ETF = "etf"
    CRYPTO = "crypto"
    FOREX = "forex"
    INDEX = "index"

    @property
    def trades_on_exchange_calendar(self) -> bool:
        """Stocks, ETFs and indices follow the NYSE sessions; crypto and forex do not."""
        return self in (AssetClass.STOCK, AssetClass.ETF, AssetClass.INDEX)

    @classmethod
    def for_symbol(cls, symbol: str) -> AssetClass:
        """The asset class a bare provider ticker implies (Polygon's ``X:``/``C:``/``I:`` prefixes)."""
        prefix = symbol[:2]
        return {"X:": cls.CRYPTO, "C:": cls.FOREX, "I:": cls.INDEX}.get(prefix, cls.STOCK)


class Timeframe(StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"
    W1 = "1w"

    @property
    def ms(self) -> int:
        return _TIMEFRAME_MS[self]

    @property
    def is_intraday(self) -> bool:
        return self.ms < MS_PER_DAY

    @property
    def polygon(self) -> tuple[int, str]:
        """(multiplier, timespan) of Polygon's custom-bars endpoint."""
        return _TIMEFRAME_POLYGON[self]

    def periods_per_year(self, asset_class: AssetClass) -> float:
        """Bars in a year, used to annualise volatility."""
        if asset_class in (AssetClass.CRYPTO,):
            days, hours = 365.0, 24.0
        elif asset_class is AssetClass.FOREX:
            days, hours = 260.0, 24.0
        else:
            days, hours = 252.0, 6.5
        if self is Timeframe.W1:
            return 52.0
        if self is Timeframe.D1:
            return days
        return days * hours * MS_PER_MINUTE * 60 / self.ms


_TIMEFRAME_MS = {
    Timeframe.M1: MS_PER_MINUTE,
    Timeframe.M5: 5 * MS_PER_MINUTE,
    Timeframe.M15: 15 * MS_PER_MINUTE,
    Timeframe.M30: 30 * MS_PER_MINUTE,
    Timeframe.H1: 60 * MS_PER_MINUTE,
    Timeframe.H4: 240 * MS_PER_MINUTE,
    Timeframe.D1: MS_PER_DAY,
    Timeframe.W1: 7 * MS_PER_DAY,
}
_TIMEFRAME_POLYGON = {
    Timeframe.M1: (1, "minute"),
    Timeframe.M5: (5, "minute"),
    Timeframe.M15: (15, "minute"),
    Timeframe.M30: (30, "minute"),
    Timeframe.H1: (1, "hour"),
    Timeframe.H4: (4, "hour"),
    Timeframe.D1: (1, "day"),
    Timeframe.W1: (1, "week"),
}


def parse_symbol(text: str) -> str:
    """Normalise and validate a provider ticker; raises ``ValueError`` with a readable message."""
    symbol = text.strip().upper()
    if not SYMBOL_RE.match(symbol):
        raise ValueError(
            f"invalid symbol {text!r}: expected a ticker like AAPL, BRK.B, X:BTCUSD, C:EURUSD or I:SPX"
        )
    return symbol


def parse_timeframe(text: str) -> Timeframe:
    try:
        return Timeframe(text.strip().lower())
    except ValueError:
        choices = ", ".join(t.value for t in Timeframe)
        raise ValueError(f"invalid timeframe {text!r}: expected one of {choices}") from None


@dataclass(frozen=True, slots=True, order=True)
class Instrument:
    symbol: str
    asset_class: AssetClass


@dataclass(frozen=True, slots=True, order=True)
class Series:
    symbol: str
    asset_class: AssetClass
    timeframe: Timeframe

    def __str__(self) -> str:
        return f"{self.symbol}/{self.timeframe}"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # some jobs failed
    FAILED = "failed"  # every job failed, or the run itself broke
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # a timer run while paused
    ABANDONED = "abandoned"  # its process died while holding the lease


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A job in one of these is not done: someone will (or should) still work on it.
JOB_UNFINISHED = (JobStatus.PENDING.value, JobStatus.RUNNING.value, JobStatus.RETRYING.value)


class Trigger(StrEnum):
    CLI = "cli"
    TIMER = "timer"
    API = "api"


class IssueKind(StrEnum):
    OHLC = "ohlc_inconsistent"
    OUT_OF_RANGE = "out_of_range"
    DUPLICATE = "duplicate"
    PRICE_SPIKE = "price_spike"
    VOLUME_ANOMALY = "volume_anomaly"
    GAP = "gap"
    NON_SESSION = "non_session_bar"
    STALE = "stale"
    READJUSTED = "readjusted"


class Severity(StrEnum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class QualityIssue:
    kind: IssueKind
    severity: Severity
    detail: str
    ts: int | None = None


BAR_FIELDS = ("ts", "open", "high", "low", "close", "volume", "vwap", "trades")


@dataclass(frozen=True, slots=True)
class Bars:
    """A column-oriented batch of bars of one series, sorted by ``ts`` unless said otherwise.

    ``volume``, ``vwap`` and ``trades`` are NaN where the provider has none (index bars).
    """

    ts: np.ndarray  # int64 epoch ms
    open: np.ndarray  # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    trades: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def empty(cls) -> Bars:
        return cls.from_columns(np.empty(0, np.int64), *(np.empty(0) for _ in range(7)))

    @classmethod
    def from_columns(cls, ts, open_, high, low, close, volume=None, vwap=None, trades=None) -> Bars:
        n = len(ts)

        def col(values) -> np.ndarray:
            if values is None:
                return np.full(n, np.nan)
            return np.asarray(values, dtype=np.float64)

        return cls(
            np.asarray(ts, dtype=np.int64),
            col(open_),
            col(high),
            col(low),
            col(close),
            col(volume),
            col(vwap),
            col(trades),
        )

    @classmethod
    def from_rows(cls, rows) -> Bars:
        """Rows of (ts, open, high, low, close, volume, vwap, trades); None becomes NaN."""
        rows = list(rows)
        if not rows:
            return cls.empty()
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        rest = np.array([r[1:8] for r in rows], dtype=np.float64)  # None -> nan
        return cls(ts, *(rest[:, i] for i in range(7)))

    def take(self, index) -> Bars:
        """A new batch of the bars selected by a boolean mask, slice or index array."""
        return Bars(*(getattr(self, name)[index] for name in BAR_FIELDS))

    def sorted(self) -> Bars:
        if len(self) < 2 or bool(np.all(np.diff(self.ts) > 0)):
            return self
        return self.take(np.argsort(self.ts, kind="stable"))

    @staticmethod
    def concat(parts: list[Bars]) -> Bars:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Bars.empty()
        if len(parts) == 1:
            return parts[0]
        return Bars(*(np.concatenate([getattr(p, name) for p in parts]) for name in BAR_FIELDS))

    def rows(self, prefix: tuple = ()) -> list[tuple]:
        """(*prefix, ts, open, high, low, close, volume, vwap, trades) tuples, None for NaN."""
        trades = self.trades
        missing = np.isnan(trades)
        counts = np.where(missing, 0, trades).astype(np.int64).tolist()
        for i in np.flatnonzero(missing).tolist():
            counts[i] = None
        cols = [self.ts.tolist(), *(nan_to_none(getattr(self, n)) for n in BAR_FIELDS[1:-1]), counts]
        return list(zip(*(repeat(p) for p in prefix), *cols))


def nan_to_none(values: np.ndarray) -> list:
    """``values.tolist()`` with None where NaN (the driver's NULL). Fast when NaN are few, as in
    an indicator's warm-up prefix."""
    listed = values.tolist()
    for i in np.flatnonzero(np.isnan(values)).tolist():
        listed[i] = None
    return listed


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ms_to_iso(ms: int | None) -> str | None:
    """UTC ISO-8601 with a ``Z``; milliseconds only when non-zero."""
    if ms is None:
        return None
    dt = ms_to_datetime(ms)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def datetime_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
