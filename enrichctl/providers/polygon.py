"""Polygon (Massive) REST aggregates over aiohttp; every HTTP attempt passes the resilience stack.

Custom bars: ``/v2/aggs/ticker/{t}/range/{m}/{span}/{from}/{to}`` (from/to in epoch ms, inclusive),
following ``next_url`` until it is absent. Grouped daily: one request per date for a whole market.
The key travels only in ``Authorization: Bearer``; it is never part of a URL, a log line, an error
message or a ``RequestRecord``. Every attempt is reported to the sink (provider "polygon").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection, Iterable
from datetime import datetime
from itertools import pairwise
from typing import Any

import aiohttp
import numpy as np
from yarl import URL

from enrichctl.calendar import NEW_YORK, SessionCalendar, ny_midnight_ms
from enrichctl.domain import MS_PER_MINUTE, AssetClass, Bars, RequestRecord, Series
from enrichctl.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderAuthError,
    ProviderError,
    RetryableProviderError,
)
from enrichctl.logs import get_logger, log_event
from enrichctl.providers.base import RequestSink
from enrichctl.providers.reference import (
    CorporateAction,
    TickerState,
    polygon_actions,
    polygon_ticker_state,
)
from enrichctl.resilience import ResilienceRegistry, ResilientCaller, current_attempt
from enrichctl.resilience.ratelimit import parse_retry_after
from enrichctl.resilience.stack import RATE_INTERVAL_SECONDS
from enrichctl.settings import PolygonSettings, ResilienceSettings

log = get_logger("providers.polygon")

NAME = "polygon"
LIMIT = 50_000  # Polygon's maximum ``limit``; it counts *base* aggregates, not returned bars
# The most minute aggregates one stock session can have (04:00-20:00 New York, extended hours).
STOCK_MINUTES_PER_SESSION = 960
OK_STATUSES = frozenset({"OK", "DELAYED"})
# The limiter counts admissions, Polygon counts arrivals. A request admitted early but sent late
# (a full bulkhead, a new TLS connection) must not land in the next window: widen it by 2 % (1.2 s
# of a minute, far more than a connection takes, for 2 % of the quota).
RATE_WINDOW_MARGIN = 0.02
# ... and never by less than this: with a short window 2 % is less than a busy host's delay
# between admitting a request and the request arriving.
RATE_WINDOW_MARGIN_FLOOR_S = 0.25


def rate_window_with_margin(window_s: float, margin: float = RATE_WINDOW_MARGIN) -> float:
    """The window the limiter enforces for a plan that counts ``window_s``."""
    return window_s + max(window_s * margin, RATE_WINDOW_MARGIN_FLOOR_S)
MAX_PAGES = 100_000  # a next_url that never ends is a provider bug, not a reason to loop forever
SERVER_TEXT_MAX = 200
USER_AGENT = "enrichctl/0.1"

_GROUPED_MARKET = {
    AssetClass.STOCK: "locale/us/market/stocks",
    AssetClass.ETF: "locale/us/market/stocks",
    AssetClass.CRYPTO: "locale/global/market/crypto",
    AssetClass.FOREX: "locale/global/market/fx",
}


class PolygonProvider:
    """Real market data from Polygon's aggregates API.

    ``fetch_bars`` returns every bar the API sent for the range, in the order received: normally
    ascending and inside [start_ms, end_ms], but a provider may send bars outside it or twice. It
    does not filter them: the pipeline's ``check_batch`` drops such bars and records each as a
    quality issue (out_of_range, duplicate), which is how they get reported.
    """

    name = NAME
    synthetic = False
    supports_grouped_daily = True
    supports_reference = True

    def __init__(
        self,
        settings: PolygonSettings,
        calendar: SessionCalendar,
        *,
        sink: RequestSink | None = None,
        resilience: ResilienceSettings | None = None,
        registry: ResilienceRegistry | None = None,
        session: aiohttp.ClientSession | None = None,
        rate_interval: float = RATE_INTERVAL_SECONDS,
        rate_margin: float = RATE_WINDOW_MARGIN,
    ) -> None:
        """``registry`` (and the clock it carries) is shared with the run so its status can be
        stored; ``session`` is borrowed, not closed; ``rate_interval`` is the quota window in
        seconds (``requests_per_minute`` per this many seconds; benchmarks shorten it), which
        the limiter widens by ``rate_margin`` (a fraction) to absorb network jitter."""
        key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        if not key:
            raise ProviderAuthError("no Polygon API key: set POLYGON_API_KEY or polygon.api_key")
        self._key = key
        self._settings = settings
        self._calendar = calendar
        self._sink = sink
        self._registry = registry if registry is not None else ResilienceRegistry()
        self._clock = self._registry.clock
        resilience = resilience if resilience is not None else ResilienceSettings()
        self._retry_after_cap = resilience.retry_after_cap
        if self._registry.rate_limiter(NAME) is None:
            self._registry.register_rate_limiter(
                NAME, rate=settings.requests_per_minute,
                interval=rate_window_with_margin(rate_interval, rate_margin),
                retry_after_cap=resilience.retry_after_cap,
            )
        self._caller = ResilientCaller.from_settings(
            NAME, resilience, settings.requests_per_minute, self._registry
        )
        base = URL(settings.base_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigError(
                f"polygon.base_url must be an http(s) URL like https://api.polygon.io, "
                f"got {settings.base_url!r}"
            )
        self._origin = base.origin()
        self._hostport = f"{base.host}:{base.port}"
        self._prefix = base.path.rstrip("/")
        self._session = session
        self._owns_session = session is None
        # A provider that is there answers within a second or two and streams its body without
        # long pauses; silence is what a dead or wedged one looks like. So silence (connecting,
        # waiting for the first byte, a stall in the body) is cut short long before the bound on
        # the whole request, which a large page arriving slowly but steadily may need.
        self._timeout = aiohttp.ClientTimeout(
            total=settings.timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.read_timeout_seconds,
        )

    # -- planning ---------------------------------------------------------------------------

    def requests_needed(self, series: Series, start_ms: int, end_ms: int) -> int:
        """One request per chunk (more only if the API paginates a chunk); 0 for an empty range."""
        return len(self.chunks(series, start_ms, end_ms))

    def chunks(self, series: Series, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """Consecutive inclusive sub-ranges that each hold at most ``LIMIT`` base aggregates.

        Intraday bars are built from minute aggregates: 50,000 minutes of a 24/7 market, or 52
        stock sessions of at most 960 extended-hours minutes. Day and week bars fit in one.
        """
        if start_ms > end_ms:
            return []
        if not series.timeframe.is_intraday:
            return [(start_ms, end_ms)]
        if series.asset_class.trades_on_exchange_calendar:
            days = self._calendar.sessions(ny_midnight_ms(start_ms), end_ms).day
            step = LIMIT // STOCK_MINUTES_PER_SESSION
            cuts = days[step::step]
        else:
            span = LIMIT * MS_PER_MINUTE
            cuts = np.arange(start_ms + span, end_ms + 1, span, dtype=np.int64)
        edges = [start_ms, *(int(c) for c in cuts if start_ms < c <= end_ms)]
        return [(a, b - 1) for a, b in pairwise(edges)] + [(edges[-1], end_ms)]

    def grouped_days(self, start_ms: int, end_ms: int) -> list[str]:
        """The NYSE session dates (YYYY-MM-DD) in [start_ms, end_ms]: one grouped request each."""
        days = self._calendar.sessions(start_ms, end_ms).day
        return [datetime.fromtimestamp(int(d) / 1000, tz=NEW_YORK).date().isoformat() for d in days]

    @staticmethod
    def grouped_requests_needed(days: Iterable[str]) -> int:
        """Grouped daily costs one request per distinct date, whatever the number of symbols."""
        return len(set(days))

    def resilience_status(self) -> dict[str, Any]:
        """The registry's snapshot (breaker, limiter, retry, bulkhead); stored with the run."""
        return self._registry.get_status()

    # -- fetching ---------------------------------------------------------------------------

    async def fetch_bars(self, series: Series, start_ms: int, end_ms: int) -> Bars:
        """Every bar Polygon sends for [start_ms, end_ms] (see the class docstring)."""
        ranges = self.chunks(series, start_ms, end_ms)
        if not ranges:
            return Bars.empty()
        if len(ranges) == 1:
            return await self._fetch_chunk(series, *ranges[0])
        # Chunks are independent: with an unlimited plan they run side by side (the bulkhead
        # bounds them); with a quota the limiter orders them anyway.
        tasks = [asyncio.ensure_future(self._fetch_chunk(series, a, b)) for a, b in ranges]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return Bars.concat(list(parts))

    async def _fetch_chunk(self, series: Series, start_ms: int, end_ms: int) -> Bars:
        multiplier, timespan = series.timeframe.polygon
        ticker = series.symbol
        url = self._url(f"/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start_ms}/{end_ms}")
        params: dict[str, str] | None = {
            "adjusted": self._adjusted, "sort": "asc", "limit": str(LIMIT),
        }
        parts: list[Bars] = []
        for _ in range(MAX_PAGES):
            body = await self._get(url, params, ticker, series.timeframe.value, "aggs")
            parts.append(_bars_of(body.get("results"), url))
            next_url = body.get("next_url")
            if not next_url:
                return Bars.concat(parts)
            url, params = self._follow(str(next_url)), None  # the cursor carries the parameters
        raise PermanentProviderError(f"Polygon kept paginating {url.path} past {MAX_PAGES} pages")

    async def fetch_grouped_daily(
        self,
        day: str,
        *,
        asset_class: AssetClass = AssetClass.STOCK,
        symbols: Collection[str] | None = None,
    ) -> dict[str, Bars]:
        """Day bars of a whole market for ``day`` (YYYY-MM-DD): ticker -> a one-bar ``Bars``.

        ``ts`` is midnight New York of ``day``, as the custom day bars have it (the grouped
        endpoint stamps 16:00 New York). ``symbols`` keeps only those tickers. No bars: {}.
        """
        market = _GROUPED_MARKET.get(asset_class)
        if market is None:
            raise ValueError(f"Polygon has no grouped daily bars for {asset_class.value}")
        try:
            date = datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"invalid date {day!r}: expected YYYY-MM-DD") from None
        day_start = int(date.replace(tzinfo=NEW_YORK).timestamp() * 1000)
        url = self._url(f"/v2/aggs/grouped/{market}/{day}")
        body = await self._get(url, {"adjusted": self._adjusted}, None, "1d", "grouped")
        results = body.get("results") or []
        wanted = None if symbols is None else set(symbols)
        try:
            rows = [r for r in results if wanted is None or r["T"] in wanted]
            tickers = [str(r["T"]) for r in rows]
        except (KeyError, TypeError):
            raise PermanentProviderError(
                f"Polygon sent a grouped bar without a ticker ({url.path})"
            ) from None
        bars = _bars_of(rows, url, ts=day_start)
        return {t: bars.take(slice(i, i + 1)) for i, t in enumerate(tickers)}

    async def corporate_actions(self, kind: str, since: str) -> list[CorporateAction]:
        """Splits or dividends of every ticker since ``since`` (see providers/reference.py)."""
        return await polygon_actions(self, kind, since)

    async def ticker_state(self, symbol: str) -> TickerState:
        return await polygon_ticker_state(self, symbol)

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    # -- one request, through the stack -----------------------------------------------------

    @property
    def _adjusted(self) -> str:
        return "true" if self._settings.adjusted else "false"

    def _url(self, path: str) -> URL:
        return self._origin.with_path(self._prefix + path, encoded=False)

    def _follow(self, next_url: str) -> URL:
        """Our own origin with next_url's path and cursor: the key only ever goes to base_url."""
        nxt = URL(next_url)
        path = nxt.path
        if self._prefix and not path.startswith(self._prefix + "/"):
            path = self._prefix + path
        query = {k: v for k, v in nxt.query.items() if k.lower() != "apikey"}
        return self._origin.with_path(path).with_query(query)

    async def _get(
        self, url: URL, params: dict[str, str] | None, symbol: str | None, timeframe: str,
        endpoint: str,
    ) -> dict[str, Any]:
        def on_retry(attempt: int, delay: float, error: BaseException) -> None:
            log_event(log, logging.WARNING, "polygon_retry", path=url.path, attempt=attempt,
                      delay_s=round(delay, 3), status=getattr(error, "status", None),
                      error=self._redact(str(error)))

        async def attempt() -> dict[str, Any]:
            return await self._attempt(url, params, symbol, timeframe, endpoint)

        return await self._caller.call(attempt, on_retry=on_retry)

    async def _attempt(
        self, url: URL, params: dict[str, str] | None, symbol: str | None, timeframe: str,
        endpoint: str,
    ) -> dict[str, Any]:
        """One HTTP GET: the decoded body, or a ProviderError sorted by how to react to it."""
        started = time.perf_counter()
        status: int | None = None
        bars = 0
        try:
            session = self._session_get()
            async with session.get(
                url, params=params, headers=self._headers(), timeout=self._timeout,
                allow_redirects=False,  # never carry the Authorization header anywhere else
            ) as response:
                status = response.status
                raw = await response.read()
                retry_after = response.headers.get("Retry-After")
            if status != 200:
                raise self._error_for(status, raw, retry_after, url)
            body = _decode(raw, url)
            self._check_status(body, url)
            results = body.get("results")
            bars = len(results) if isinstance(results, list) else 0
        except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors too
            error: ProviderError = RetryableProviderError(self._timeout_cause(exc, status),
                                                          status=status)
            self._record(symbol, timeframe, endpoint, status, started, 0, error)
            raise error from None
        except aiohttp.ClientError as exc:
            error = RetryableProviderError(
                self._redact(_transport_cause(exc, self._hostport)), status=status
            )
            self._record(symbol, timeframe, endpoint, status, started, 0, error)
            raise error from None
        except (ProviderError, ProviderAuthError) as exc:
            self._record(symbol, timeframe, endpoint, status, started, 0, exc)
            raise
        self._record(symbol, timeframe, endpoint, status, started, bars, None)
        return body

    def _timeout_cause(self, exc: TimeoutError, status: int | None) -> str:
        """Which bound ran out, in words; ``status`` is set once the answer's head had arrived."""
        s = self._settings
        if isinstance(exc, aiohttp.ConnectionTimeoutError):  # sock_connect, or total while connecting
            within = min(s.connect_timeout_seconds, s.timeout_seconds)
            return f"cannot connect to {self._hostport} (no connection within {within:g} s)"
        if isinstance(exc, aiohttp.SocketTimeoutError):
            if status is None:
                return f"no answer from {self._hostport} within {s.read_timeout_seconds:g} s"
            return f"{self._hostport} stopped sending its answer for {s.read_timeout_seconds:g} s"
        if status is None:
            return f"no answer from {self._hostport} within {s.timeout_seconds:g} s"
        return f"no complete answer from {self._hostport} within {s.timeout_seconds:g} s"

    def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}", "User-Agent": USER_AGENT}

    def _error_for(
        self, status: int, raw: bytes, retry_after: str | None, url: URL
    ) -> ProviderError | ProviderAuthError:
        """401/403 and refused keys need a person; 429, 5xx retry; any other status does not."""
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        doc = doc if isinstance(doc, dict) else {}
        # Redact before cutting, or a cut could leave the first half of an echoed key behind.
        said = doc.get("message") or doc.get("error") or raw[:4096].decode("utf-8", "replace")
        said = self._redact(str(said))[:SERVER_TEXT_MAX]
        what = f"{doc.get('status') or 'HTTP'} {status}: {said}".strip()
        if status in (401, 403) or doc.get("status") == "NOT_AUTHORIZED":
            return ProviderAuthError(
                f"Polygon refused the API key ({what}); check polygon.api_key / POLYGON_API_KEY "
                "and that the plan covers this data"
            )
        if status == 429 or status >= 500:
            wait = parse_retry_after(retry_after or "", self._clock.wall(), cap=self._retry_after_cap)
            return RetryableProviderError(f"Polygon {url.path} failed ({what})", status=status,
                                          retry_after=wait)
        return PermanentProviderError(f"Polygon {url.path} failed ({what})", status=status)

    def _check_status(self, body: dict[str, Any], url: URL) -> None:
        state = body.get("status")
        if state in OK_STATUSES:
            return
        said = self._redact(str(body.get("error") or body.get("message") or ""))[:SERVER_TEXT_MAX]
        if state == "NOT_AUTHORIZED" or "api key" in said.lower():
            raise ProviderAuthError(f"Polygon refused the API key ({state}: {said})")
        raise PermanentProviderError(f"Polygon {url.path} answered status {state!r}: {said}", status=200)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***")

    def _record(
        self, symbol: str | None, timeframe: str, endpoint: str, status: int | None,
        started: float, bars: int, error: BaseException | None,
    ) -> None:
        if self._sink is None:
            return
        self._sink(
            RequestRecord(
                provider=NAME, symbol=symbol, timeframe=timeframe, endpoint=endpoint,
                status=status, ok=error is None, latency_ms=(time.perf_counter() - started) * 1000,
                attempt=current_attempt(), bars=bars, at_ms=int(self._clock.wall() * 1000),
                error=self._redact(str(error)) if error is not None else None,
            )
        )


def _transport_cause(exc: aiohttp.ClientError, hostport: str) -> str:
    """What went wrong on the way to the provider, in words: refused, unresolvable, reset."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {hostport.rpartition(':')[0]} (DNS lookup failed)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"cannot connect to {hostport} (connection refused)"
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect to {hostport} ({reason.lower()})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{hostport} closed the connection without an answer"
    return f"cannot reach {hostport} ({type(exc).__name__})"


def _decode(raw: bytes, url: URL) -> dict[str, Any]:
    """A JSON object, or a retryable error: a cut or garbled body is a transport accident."""
    try:
        body = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise RetryableProviderError(
            f"Polygon sent broken JSON for {url.path} ({len(raw)} bytes)", status=200
        ) from None
    if not isinstance(body, dict):
        raise RetryableProviderError(f"Polygon sent a non-object body for {url.path}", status=200)
    return body


def _bars_of(results: Any, url: URL, *, ts: int | None = None) -> Bars:
    """Polygon result objects -> Bars; missing v/vw/n (index bars) and nulls become NaN."""
    if not results:
        return Bars.empty()
    try:
        n = len(results)
        if ts is None:
            stamps = np.array([r["t"] for r in results], np.int64)
        else:
            stamps = np.full(n, ts, np.int64)
        # dtype=float turns None into NaN, so a list comprehension per column is all it takes.
        o, h, lo, c = (np.array([r[k] for r in results], np.float64) for k in ("o", "h", "l", "c"))
        v, vw, trades = (np.array([r.get(k) for r in results], np.float64) for k in ("v", "vw", "n"))
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentProviderError(
            f"Polygon sent a bar we cannot read from {url.path} ({type(exc).__name__}: {exc})"
        ) from None
    return Bars(stamps, o, h, lo, c, v, vw, trades)
