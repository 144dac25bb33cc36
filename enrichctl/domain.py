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

# A provider ticker as Polygon writes them: ASCII letters and digits, then also "." and "-", after
# an optional market prefix. Matched before upper-casing, in ASCII only: str.upper maps "ß" to
# "SS" and "ﬀ" to "FF", so a non-ASCII letter must be refused, never folded into a ticker.
SYMBOL_PATTERN = r"^(?:[XCIxci]:)?[A-Za-z0-9][A-Za-z0-9.\-]{0,19}$"
SYMBOL_RE = re.compile(SYMBOL_PATTERN, re.ASCII)

# The earliest instant enrichctl ever asks a provider for: 1970-01-01T00:00Z (epoch 0). Polygon's
# history starts decades later; an earlier --since (or a longer history_days) means "from the
# start of what the provider has", never a negative instant.
EARLIEST_MS = 0

# C0 and C1 control characters, DEL, and the bidirectional overrides that reorder what a terminal
# shows: stored text (a pause reason, an error) prints them escaped, never raw.
_UNPRINTABLE = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
    **{c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))},
    ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r",
}


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
        """Bars a year the asset class's calendar has for this timeframe (annualises volatility):
        NYSE: 252 sessions of the bars that touch 09:30-16:00 New York (``session_bar_grid``:
        7 hourly bars, 78 of 5 minutes, what completeness expects too); crypto: 365 days of
        24 h; forex: 52 weeks of Sunday 17:00 to Friday 17:00."""
        if self is Timeframe.W1:
            return 52.0
        if asset_class is AssetClass.CRYPTO:
            days, minutes = 365.0, 24 * 60
        elif asset_class is AssetClass.FOREX:
            days, minutes = 260.0, 24 * 60
        else:
            if self is Timeframe.D1:
                return 252.0
            _, count = session_bar_grid((9 * 60 + 30) * MS_PER_MINUTE, 16 * 60 * MS_PER_MINUTE, self.ms)
            return 252.0 * int(count)
        if self is Timeframe.D1:
            return days
        return days * minutes * MS_PER_MINUTE / self.ms


def session_bar_grid(open_ms, close_ms, step_ms: int):
    """The in-session bars of a session [open, close): the first bar's start and how many there
    are (scalars or arrays). The bar holding the open (09:00 for hourly bars, opening at 09:30)
    counts, bars starting at or after the close do not: 7 hourly bars, 78 of 5 minutes a
    regular session, 4 hourly bars a 13:00 half-day. Extended-hours bars are outside it."""
    first = open_ms // step_ms * step_ms
    return first, np.maximum(0, -(-(close_ms - first) // step_ms))


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
    """Validate a provider ticker (``SYMBOL_PATTERN``) and upper-case it; raises ``ValueError``
    with a readable message. The one rule of the CLI, the settings, the API and the research
    API; surrounding blanks are the caller's to strip (the API refuses them)."""
    # fullmatch: with match, the pattern's "$" would also accept a trailing newline.
    if not SYMBOL_RE.fullmatch(text):
        raise ValueError(
            f"invalid symbol {text[:40]!r}: expected a ticker like AAPL, BRK.B, X:BTCUSD, "
            "C:EURUSD or I:SPX (ASCII letters, digits, '.', '-')"
        )
    return text.upper()


def printable(text: str) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\n``): safe for a terminal."""
    return text.translate(_UNPRINTABLE)


def parse_timeframe(text: str) -> Timeframe:
    """``1d``, ``1H``, ... as a Timeframe. ``1M`` is refused, not read as one minute: in pandas,
    yfinance and freqtrade habits it means one month, which no provider endpoint here serves."""
    choices = ", ".join(t.value for t in Timeframe)
    value = text.strip()
    if "M" in value:
        raise ValueError(
            f"ambiguous timeframe {text!r}: write {value.lower()!r} for minutes "
            f"(months are not available); expected one of {choices}"
        )
    try:
        return Timeframe(value.lower())
    except ValueError:
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
    BAD_PRINT = "bad_print"  # a one-bar move that reverts on the next bar
    VWAP = "vwap_outside"  # vwap outside [low, high]
    FROZEN = "frozen_price"  # many identical bars while volume trades
    INTRADAY_HOLE = "intraday_hole"  # bars missing inside a regular session
    PROVIDER_MISMATCH = "provider_mismatch"  # verify --against-provider found a different value
    INDICATOR_MISMATCH = "indicator_mismatch"  # verify --recompute found a different indicator value


# What ``verify`` records: open until a run refetches (and so replaces) the series.
VERIFY_ISSUE_KINDS = (IssueKind.PROVIDER_MISMATCH.value, IssueKind.INDICATOR_MISMATCH.value)


class Severity(StrEnum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class QualityIssue:
    kind: IssueKind
    severity: Severity
    detail: str
    ts: int | None = None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One provider call as it is stored in ``requests`` (the key is never part of it)."""

    provider: str
    symbol: str | None
    timeframe: str | None
    endpoint: str  # e.g. "aggs", "grouped", "demo"
    status: int | None  # HTTP status, None when no response arrived
    ok: bool
    latency_ms: float
    attempt: int
    bars: int
    at_ms: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CorporateAction:
    """A split or dividend from the provider's reference data (``corporate_actions``)."""

    symbol: str
    kind: str  # "split" | "dividend"
    ex_date: str  # YYYY-MM-DD
    ratio: float | None = None  # split_to / split_from: 2.0 for a 2-for-1 split
    amount: float | None = None  # cash per share

    def describe(self) -> str:
        if self.kind == "split":
            ratio = self.ratio or 1.0
            text = f"{ratio:g}:1" if ratio >= 1 else f"1:{1 / ratio:g}"
            return f"split {text} on {self.ex_date}"
        return f"dividend {self.amount:g} on {self.ex_date}"


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
