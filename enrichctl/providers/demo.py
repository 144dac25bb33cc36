"""An offline provider of synthetic, clearly labelled (``synthetic = True``) market data.

Every value of a bar is a pure function of (seed, symbol, timeframe, ts): the pipeline re-reads
bars before its watermark and treats any change as re-adjusted history, so fetching a range in one
call or in a hundred pieces must give bit-identical bars. The price is a sum of octaves of smooth
value noise on absolute, epoch-anchored grids, exponentiated; nothing depends on the asked range.
Which bars exist follows the same calendar as the quality checks, so a demo series has no gaps.

Like Polygon's adjusted aggregates, the bars before a split come back split-adjusted once the split
has happened (by the provider's clock), and unadjusted before; ``corporate_actions`` lists it, so
a run takes the same reference path offline: ``DEMO_SPLITS`` holds one, GOOGL's 20-for-1 of
2022-07-18.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from enrichctl.calendar import NEW_YORK, SessionCalendar, day_start_ms
from enrichctl.domain import MS_PER_DAY, AssetClass, Bars, RequestRecord, Series, Timeframe, now_ms, session_bar_grid
from enrichctl.providers.base import RequestSink
from enrichctl.providers.reference import CorporateAction, TickerState

CHUNK_BARS = 50_000  # bars per simulated request, like Polygon's ``limit``
REGULAR_SESSION_MS = 390 * 60_000  # 09:30-16:00 New York: one day's share of stock volume

# Octave wavelengths in ms: 1024 days halved 20 times; 1024 days = 2**20 * 84_375 ms, so every
# wavelength is an exact integer and the finest (84.375 s) is just above one minute.
_TOP_WAVELENGTH_MS = 1024 * MS_PER_DAY
OCTAVES_MS = tuple(_TOP_WAVELENGTH_MS >> k for k in range(21))
# Scales the sqrt(wavelength) amplitudes so that the std dev of one-day log changes of a path
# built from the day-and-longer octaves equals the symbol's ``sigma_day`` (measured once over
# 40 years of days; test_daily_log_returns_have_a_plausible_volatility guards the result).
_AMPLITUDE_NORM = 0.916
_LONG_OCTAVES = 5  # octaves 0..4 (1024 .. 64 days) are the "long" ones long_damping applies to

# The demo's corporate actions: deterministic, on a fixed date, on a symbol of the default universe.
DEMO_SPLITS = (CorporateAction("GOOGL", "split", "2022-07-18", ratio=20.0),)
ADJUSTED_DECIMALS = 4  # split-adjusted prices keep more decimals, as Polygon's do

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_U11, _U27, _U30, _U31 = (np.uint64(n) for n in (11, 27, 30, 31))
_M1, _M2, _GAMMA_U = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(_GAMMA)
_UNIT = 1.0 / (1 << 53)


def _mix_int(x: int) -> int:
    """splitmix64's finaliser on one Python int (for keys)."""
    z = (x + _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _uniform(key: int, counter: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) per element of an int64 ``counter``: splitmix64 of stream ``key``."""
    z = np.uint64(key) + counter.astype(np.int64, copy=False).view(np.uint64) * _GAMMA_U
    z = (z ^ (z >> _U30)) * _M1
    z = (z ^ (z >> _U27)) * _M2
    z ^= z >> _U31
    return (z >> _U11).astype(np.float64) * _UNIT


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; blake2b is the same on every machine and run.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class _ClassProfile:
    price: tuple[float, float]  # log-uniform base price range
    sigma_day: tuple[float, float]  # std dev of daily log returns
    volume_per_day: tuple[float, float] | None  # units per normal day; None: no volume (index)
    trade_notional: float  # average trade size in quote currency; 0: one unit per trade
    # Amplitude factor per octave above ~a month: 1.0 is a random walk at every scale; below 1
    # the price reverts over months, as exchange rates do (EURUSD stays within ~1.0-1.25 for years).
    long_damping: float = 1.0


_PROFILES = {
    AssetClass.STOCK: _ClassProfile((10.0, 500.0), (0.010, 0.024), (2e5, 5e7), 12_000.0),
    AssetClass.ETF: _ClassProfile((20.0, 450.0), (0.009, 0.016), (5e5, 8e7), 20_000.0),
    AssetClass.INDEX: _ClassProfile((800.0, 20_000.0), (0.008, 0.014), None, 0.0),
    AssetClass.CRYPTO: _ClassProfile((0.5, 800.0), (0.030, 0.045), (5e6, 5e8), 800.0),
    AssetClass.FOREX: _ClassProfile((0.6, 1.6), (0.006, 0.009), (3e4, 3e5), 0.0, 0.7),
}
# Well-known tickers get their familiar order of magnitude so demo charts look recognisable.
_FAMILIAR_PRICE = {
    AssetClass.CRYPTO: {"BTC": (22_000.0, 40_000.0), "ETH": (1_500.0, 3_000.0)},
    AssetClass.FOREX: {"JPY": (100.0, 160.0)},
}


def _price_decimals(asset_class: AssetClass, base: float) -> int:
    """Quote precision: cents for stocks, ETFs and indices, ~6 significant digits otherwise."""
    if asset_class.trades_on_exchange_calendar:
        return 2
    return max(2, 6 - math.floor(math.log10(base)))


@dataclass(frozen=True, slots=True)
class _SymbolModel:
    """The per-symbol constants every bar of that symbol is drawn with."""

    key: int
    log_base: float
    sigma_day: float
    long_damping: float
    volume_per_day: float | None  # None: the asset class reports no volume
    units_per_trade: float
    decimals: int

    @classmethod
    def build(cls, symbol: str, asset_class: AssetClass, seed: int) -> _SymbolModel:
        sym = _stable_hash(symbol)
        u = [_mix_int(sym + j) / 2.0**64 for j in range(3)]  # level, vol, volume: seed-free
        profile = _PROFILES[asset_class]
        familiar = _FAMILIAR_PRICE.get(asset_class, {})
        low, high = next((r for tag, r in familiar.items() if tag in symbol), profile.price)
        log_base = math.log(low) + u[0] * (math.log(high) - math.log(low))
        volume = None
        if profile.volume_per_day is not None:
            v_lo, v_hi = profile.volume_per_day
            volume = math.exp(math.log(v_lo) + u[2] * (math.log(v_hi) - math.log(v_lo)))
            if asset_class is AssetClass.CRYPTO:
                volume /= math.exp(log_base)  # the range is a notional; crypto volume is in coins
        base = math.exp(log_base)
        return cls(
            key=_mix_int(sym ^ _mix_int(seed & _MASK64)),
            log_base=log_base,
            sigma_day=profile.sigma_day[0] + u[1] * (profile.sigma_day[1] - profile.sigma_day[0]),
            long_damping=profile.long_damping,
            volume_per_day=volume,
            units_per_trade=profile.trade_notional / base if profile.trade_notional else 1.0,
            decimals=_price_decimals(asset_class, base),
        )

    def log_price(self, t: np.ndarray, finest_ms: int) -> np.ndarray:
        """log P(t) for int64 epoch ms, from the octaves with wavelength >= ``finest_ms``."""
        out = np.full(t.shape, self.log_base)
        if not len(t):
            return out
        for k, wavelength in enumerate(OCTAVES_MS):
            if wavelength < finest_ms:
                break
            amplitude = self.sigma_day * _AMPLITUDE_NORM * math.sqrt(wavelength / MS_PER_DAY)
            amplitude *= self.long_damping ** max(0, _LONG_OCTAVES - k)
            cell, offset = np.divmod(t, wavelength)
            lo, hi = int(cell.min()), int(cell.max())
            key = _mix_int(self.key ^ ((k + 1) * _GAMMA & _MASK64))
            if hi - lo < 2 * len(t):  # hash each grid point of the span once, then gather
                grid = _uniform(key, np.arange(lo, hi + 2, dtype=np.int64)) * 2.0 - 1.0
                left, right = grid[cell - lo], grid[cell - lo + 1]
            else:  # sparse samples of a fine octave: hash only the corners we need
                left = _uniform(key, cell) * 2.0 - 1.0
                right = _uniform(key, cell + 1) * 2.0 - 1.0
            frac = offset * (1.0 / wavelength)
            smooth = frac * frac * (3.0 - 2.0 * frac)
            out += amplitude * (left + (right - left) * smooth)
        return out


class _NewYorkMidnights:
    """Midnight New York (epoch ms) of UTC day numbers, via the calendar's own ``day_start_ms``
    (so the two always agree), computed once per block of days instead of once per bar."""

    _BLOCK = 1024

    def __init__(self) -> None:
        self._blocks: dict[int, np.ndarray] = {}

    def __call__(self, day_number: np.ndarray) -> np.ndarray:
        if not len(day_number):
            return np.empty(0, np.int64)
        first, last = int(day_number.min()) // self._BLOCK, int(day_number.max()) // self._BLOCK
        for block in range(first, last + 1):
            if block not in self._blocks:
                days = np.arange(block * self._BLOCK, (block + 1) * self._BLOCK, dtype=np.int64)
                self._blocks[block] = day_start_ms(days * MS_PER_DAY)
        table = np.concatenate([self._blocks[b] for b in range(first, last + 1)])
        return table[day_number - first * self._BLOCK]


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which bars exist: start, the instants whose prices are its open and close, and its
    volume as a multiple of a normal day's."""

    ts: np.ndarray
    t_open: np.ndarray
    t_close: np.ndarray
    day_share: np.ndarray

    def take(self, index: np.ndarray | slice) -> _Layout:
        return _Layout(
            self.ts[index], self.t_open[index], self.t_close[index], self.day_share[index]
        )


def _weekday(day_number: np.ndarray) -> np.ndarray:
    return (day_number + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


class DemoProvider:
    """Synthetic OHLCV bars computed offline; deterministic for a given ``seed``.

    Each fetch reports one ``RequestRecord`` per 50,000 bars to the sink, as Polygon would cost.
    """

    name = "demo"
    synthetic = True
    supports_grouped_daily = False
    supports_reference = True  # its splits; every ticker exists (see ticker_state)

    def __init__(
        self,
        calendar: SessionCalendar,
        *,
        sink: RequestSink | None = None,
        seed: int = 0,
        clock: Callable[[], int] = now_ms,
        splits: tuple[CorporateAction, ...] = DEMO_SPLITS,
    ) -> None:
        self._calendar = calendar
        self._splits = splits
        self._sink = sink
        self._seed = seed
        self._clock = clock
        self._midnights = _NewYorkMidnights()
        self._models: dict[tuple[str, AssetClass], _SymbolModel] = {}

    def requests_needed(self, series: Series, start_ms: int, end_ms: int) -> int:
        """One call per started 50,000 bars; an empty range with start <= end still costs one."""
        if start_ms > end_ms:
            return 0
        bars = len(self._layout(series, start_ms, end_ms).ts)
        return max(1, -(-bars // CHUNK_BARS))

    async def fetch_bars(self, series: Series, start_ms: int, end_ms: int) -> Bars:
        """Complete bars with start_ms <= ts <= end_ms, sorted; one record per 50,000 bars."""
        if start_ms > end_ms:
            return Bars.empty()
        began = time.perf_counter()
        layout = self._layout(series, start_ms, end_ms)
        parts: list[Bars] = []
        for first in range(0, max(len(layout.ts), 1), CHUNK_BARS):
            part = self._bars(series, layout.take(slice(first, first + CHUNK_BARS)))
            parts.append(part)
            self._record(series, len(part), (time.perf_counter() - began) * 1000.0)
            await asyncio.sleep(0)  # let other tasks (and cancellation) in between "requests"
            began = time.perf_counter()
        return Bars.concat(parts)

    async def aclose(self) -> None:
        """Nothing to release; present for the Protocol."""

    async def corporate_actions(self, kind: str, since: str) -> list[CorporateAction]:
        """The splits executed from ``since`` (YYYY-MM-DD) up to the clock's today; no dividends."""
        today = datetime.fromtimestamp(self._clock() / 1000, NEW_YORK).strftime("%Y-%m-%d")
        return [a for a in self._splits if a.kind == kind and since <= a.ex_date <= today]

    async def ticker_state(self, symbol: str) -> TickerState:
        """Active: the demo synthesises a history for any ticker, so none is unknown or delisted."""
        return TickerState.ACTIVE

    def _split_adjusted(self, series: Series, bars: Bars) -> Bars:
        """The synthetic path is the split-adjusted history. Before a split the bars traded at
        ``ratio`` times its prices (in cents, volume in whole shares); once the split has
        happened they come back adjusted from those: prices / ratio (4 decimals), volume x ratio."""
        for split in self._splits:
            if split.symbol != series.symbol or not split.ratio or not len(bars):
                continue
            execution = int(datetime.strptime(split.ex_date, "%Y-%m-%d")
                            .replace(tzinfo=NEW_YORK).timestamp() * 1000)
            before = bars.ts < execution
            if not before.any():
                continue
            r, decimals = split.ratio, self._model(series).decimals
            prices = [np.round(x * r, decimals) for x in (bars.open, bars.high, bars.low, bars.close, bars.vwap)]
            volume = np.round(bars.volume / r)
            if execution <= self._clock():
                prices = [np.round(x / r, ADJUSTED_DECIMALS) for x in prices]
                volume = volume * r
            o, h, lo, c, vw = (np.where(before, x, old) for x, old in zip(
                prices, (bars.open, bars.high, bars.low, bars.close, bars.vwap), strict=True))
            bars = Bars(bars.ts, o, h, lo, c, np.where(before, volume, bars.volume), vw, bars.trades)
        return bars

    def _record(self, series: Series, bars: int, latency_ms: float) -> None:
        if self._sink is None:
            return
        self._sink(
            RequestRecord(
                provider=self.name,
                symbol=series.symbol,
                timeframe=series.timeframe.value,
                endpoint="demo",
                status=200,
                ok=True,
                latency_ms=latency_ms,
                attempt=1,
                bars=bars,
                at_ms=now_ms(),  # when the call happened, not the market time the clock pins
            )
        )

    # -- which bars exist ------------------------------------------------------------------

    def _layout(self, series: Series, start_ms: int, end_ms: int) -> _Layout:
        """The bars of ``series`` with start_ms <= ts <= end_ms that are complete now."""
        tf = series.timeframe
        if tf is Timeframe.D1:
            layout = self._daily(series.asset_class, start_ms, end_ms)
        elif tf is Timeframe.W1:
            layout = self._weeks(series.asset_class, start_ms, end_ms)
        elif series.asset_class.trades_on_exchange_calendar:
            layout = self._intraday_exchange(tf, start_ms, end_ms)
        else:
            layout = self._intraday(series.asset_class, tf, start_ms, end_ms)
        keep = (
            (layout.ts >= start_ms) & (layout.ts <= end_ms) & (layout.ts + tf.ms <= self._clock())
        )
        return layout if bool(keep.all()) else layout.take(keep)

    def _daily(self, asset_class: AssetClass, start_ms: int, end_ms: int) -> _Layout:
        if asset_class.trades_on_exchange_calendar:
            s = self._calendar.sessions(start_ms, end_ms)
            return _Layout(s.day, s.open, s.close, (s.close - s.open) / REGULAR_SESSION_MS)
        days = np.arange(start_ms // MS_PER_DAY - 1, end_ms // MS_PER_DAY + 1, dtype=np.int64)
        if asset_class is AssetClass.FOREX:
            days = days[_weekday(days) < 5]
        # Day bars of crypto and forex run from one New York midnight to the next.
        ts = self._midnights(days)
        return _Layout(ts, ts, self._midnights(days + 1), np.ones(len(ts)))

    def _weeks(self, asset_class: AssetClass, start_ms: int, end_ms: int) -> _Layout:
        """Weeks (from Monday midnight New York) holding at least one day bar; their values are
        aggregated from those day bars (``_weekly_bars``), so only ``ts`` is used."""
        days = self._daily(asset_class, start_ms, end_ms + 7 * MS_PER_DAY).ts
        weeks = np.unique(self._monday_of(days))
        return _Layout(weeks, weeks, weeks + 7 * MS_PER_DAY, np.ones(len(weeks)))

    def _monday_of(self, day_ts: np.ndarray) -> np.ndarray:
        day_number = day_ts // MS_PER_DAY  # NY midnight is 04:00/05:00 UTC of the same date
        return self._midnights(day_number - _weekday(day_number))

    def _intraday_exchange(self, tf: Timeframe, start_ms: int, end_ms: int) -> _Layout:
        """The in-session bars (``session_bar_grid``: the bar holding the open, up to the close;
        regular hours, early closes), as Polygon's adjusted aggregates have them."""
        s = self._calendar.sessions(start_ms - MS_PER_DAY, end_ms)
        first, count = session_bar_grid(s.open, s.close, tf.ms)
        total = int(count.sum())
        index_in_session = np.arange(total, dtype=np.int64) - np.repeat(
            np.cumsum(count) - count, count
        )
        ts = np.repeat(first, count) + index_in_session * tf.ms
        t_open = np.maximum(ts, np.repeat(s.open, count))  # the 09:00 bar trades from 09:30
        t_close = np.minimum(ts + tf.ms, np.repeat(s.close, count))
        return _Layout(ts, t_open, t_close, (t_close - t_open) / REGULAR_SESSION_MS)

    def _intraday(
        self, asset_class: AssetClass, tf: Timeframe, start_ms: int, end_ms: int
    ) -> _Layout:
        ts = np.arange(-(-start_ms // tf.ms) * tf.ms, end_ms + 1, tf.ms, dtype=np.int64)
        if asset_class is AssetClass.FOREX:  # Monday 00:00 UTC .. Friday 24:00 UTC
            ts = ts[_weekday(ts // MS_PER_DAY) < 5]
        return _Layout(ts, ts, ts + tf.ms, np.full(len(ts), tf.ms / MS_PER_DAY))

    # -- what the bars hold ----------------------------------------------------------------

    def _model(self, series: Series) -> _SymbolModel:
        key = (series.symbol, series.asset_class)
        if key not in self._models:
            self._models[key] = _SymbolModel.build(series.symbol, series.asset_class, self._seed)
        return self._models[key]

    def _bars(self, series: Series, layout: _Layout) -> Bars:
        """Bar values; each row depends only on its own ts (and the symbol, timeframe, seed),
        and on the splits that have happened."""
        if not len(layout.ts):
            return Bars.empty()
        if series.timeframe is Timeframe.W1:
            return self._weekly_bars(series, layout.ts)  # from the (adjusted) day bars
        return self._split_adjusted(series, self._raw_bars(series, layout))

    def _raw_bars(self, series: Series, layout: _Layout) -> Bars:
        model = self._model(series)
        finest = min(series.timeframe.ms, MS_PER_DAY)
        t_open, t_close = layout.t_open, layout.t_close
        if len(t_open) > 1 and np.array_equal(t_open[1:], t_close[:-1]):
            # Back-to-back bars share instants: evaluate each once (same values either way).
            log_p = model.log_price(np.append(t_open, t_close[-1]), finest)
            log_open, log_close = log_p[:-1], log_p[1:]
        else:
            log_p = model.log_price(np.concatenate([t_open, t_close]), finest)
            log_open, log_close = log_p[: len(t_open)], log_p[len(t_open) :]
        open_, close = np.exp(log_open), np.exp(log_close)

        key = _mix_int(model.key ^ _stable_hash(series.timeframe.value))
        u = [_uniform(_mix_int(key + j), layout.ts) for j in range(4)]
        duration_days = np.clip((t_close - t_open) / MS_PER_DAY, 1 / 1440, 7.0)
        sigma_bar = model.sigma_day * np.sqrt(duration_days)
        # Exponential wick sizes (-log(1-u) >= 0) with a floor so a wick is never empty.
        high = np.maximum(open_, close) * np.exp(sigma_bar * (0.1 - 0.6 * np.log1p(-u[0])))
        low = np.minimum(open_, close) * np.exp(-sigma_bar * (0.1 - 0.6 * np.log1p(-u[1])))
        open_, high, low, close = (np.round(x, model.decimals) for x in (open_, high, low, close))
        if model.volume_per_day is None:
            return Bars.from_columns(layout.ts, open_, high, low, close)

        gauss = np.sqrt(-2.0 * np.log1p(-u[2])) * np.cos(2.0 * np.pi * u[3])
        activity = 0.6 + 0.4 * np.abs(log_close - log_open) / sigma_bar  # busier on big moves
        volume = model.volume_per_day * layout.day_share * np.exp(0.35 * gauss) * activity
        volume = np.round(volume, 4 if series.asset_class is AssetClass.CRYPTO else 0)
        vwap = np.clip(np.round((high + low + close) / 3.0, model.decimals), low, high)
        trades = np.round(volume / model.units_per_trade)
        return Bars.from_columns(layout.ts, open_, high, low, close, volume, vwap, trades)

    def _weekly_bars(self, series: Series, weeks: np.ndarray) -> Bars:
        """Week bars as the aggregate of the week's day bars, so the two timeframes agree."""
        day_series = Series(series.symbol, series.asset_class, Timeframe.D1)
        days = self._daily(series.asset_class, int(weeks[0]), int(weeks[-1]) + 7 * MS_PER_DAY)
        monday = self._monday_of(days.ts)
        week = np.minimum(np.searchsorted(weeks, monday), len(weeks) - 1)
        mine = weeks[week] == monday
        daily, week = self._bars(day_series, days.take(mine)), week[mine]
        first = np.flatnonzero(np.r_[True, week[1:] != week[:-1]])  # every week has a day bar
        last = np.r_[first[1:], len(week)] - 1
        high = np.maximum.reduceat(daily.high, first)
        low = np.minimum.reduceat(daily.low, first)
        volume = np.add.reduceat(daily.volume, first)
        decimals = self._model(series).decimals
        vwap = np.add.reduceat(daily.vwap * daily.volume, first) / volume
        vwap = np.clip(np.round(vwap, decimals), low, high)
        trades = np.add.reduceat(daily.trades, first)
        return Bars.from_columns(
            weeks, daily.open[first], high, low, daily.close[last], volume, vwap, trades
        )
