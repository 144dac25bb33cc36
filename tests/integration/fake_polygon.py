"""A fake Polygon (Massive) REST server on 127.0.0.1 (real sockets, ephemeral port).

It speaks the wire format of ``../shared/reference/polygon``: custom bars
(``/v2/aggs/ticker/{t}/range/{m}/{span}/{from}/{to}``) with ``next_url`` pagination and grouped
daily (``/v2/aggs/grouped/locale/{l}/market/{m}/{date}``), served from bars it holds or from canned
bodies, and the reference endpoints ``/v3/reference/splits``, ``/v3/reference/dividends`` (filtered
by ``execution_date.gte`` / ``ex_dividend_date.gte``, paginated with ``next_url``) and
``/v3/reference/tickers/{t}`` (404 for a ticker it neither holds nor lists). Like the real API, ``limit`` counts *base* aggregates (minutes for intraday bars, days
otherwise) and a range holding more is cut short without a ``next_url`` — which is why clients
must chunk long intraday ranges. Faults on demand: a per-window request budget (a sliding window)
answered with 429, with or without ``Retry-After``, scripted statuses (5xx bursts, 403, 404...), slow answers, garbled or cut
bodies, refused keys (``NOT_AUTHORIZED``/``message`` or ``ERROR``/``error``), re-adjusted
history, and bad data: gaps, one-bar prints that revert, frozen prices. Every request is recorded (path, query string, headers, status) for assertions.

    async with FakePolygon(api_key="k") as fake:
        fake.hold(series, bars)
        ... PolygonSettings(api_key="k", base_url=fake.url) ...
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Self

import numpy as np
from aiohttp import web

from enrichctl.calendar import NEW_YORK
from enrichctl.domain import (
    MS_PER_DAY,
    MS_PER_MINUTE,
    AssetClass,
    Bars,
    Series,
    Timeframe,
)
from enrichctl.providers.base import Provider

LIMIT_MAX = 50_000
_TIMEFRAME_OF = {tf.polygon: tf for tf in Timeframe}
_GROUPED_CLASSES = {
    ("us", "stocks"): (AssetClass.STOCK, AssetClass.ETF),
    ("global", "crypto"): (AssetClass.CRYPTO,),
    ("global", "fx"): (AssetClass.FOREX,),
}


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request as the server saw it."""

    at: float  # time.monotonic() on arrival
    path: str
    query_string: str
    headers: dict[str, str]
    status: int


@dataclass(slots=True)
class _Held:
    """One series' bars and each bar pre-serialised as a Polygon result object (fast paging)."""

    series: Series
    bars: Bars
    rows: list[str] = field(default_factory=list)


def _row_json(bars: Bars, i: int, with_volume: bool, ticker: str | None = None, t: int | None = None) -> str:
    doc: dict[str, Any] = {} if ticker is None else {"T": ticker}
    doc.update(o=float(bars.open[i]), h=float(bars.high[i]), l=float(bars.low[i]),
               c=float(bars.close[i]), t=int(bars.ts[i]) if t is None else t)
    if with_volume:
        for key, col in (("v", bars.volume), ("vw", bars.vwap), ("n", bars.trades)):
            if not math.isnan(col[i]):
                doc[key] = int(col[i]) if key == "n" else float(col[i])
    return json.dumps(doc, separators=(",", ":"))


class FakePolygon:
    """The server; start with ``async with`` (or ``start``/``close``); ``url`` is its base URL."""

    def __init__(
        self,
        *,
        api_key: str,
        page_size: int = LIMIT_MAX,
        budget: int = 0,
        window: float = 60.0,
        auth_error: str = "not_authorized",
        retry_after: bool = True,
    ) -> None:
        """``budget`` requests per rolling ``window`` seconds (0 = unlimited); ``auth_error`` is
        the shape of a refused key: "not_authorized" or "error". ``retry_after=False`` is a
        provider stricter than its client was told: its 429s say nothing about when to retry
        (no ``Retry-After``), as Polygon's do."""
        self.api_key = api_key
        self.page_size = page_size
        self.budget = budget
        self.window = window
        self.auth_error = auth_error
        self.retry_after = retry_after
        self.slow = 0.0  # seconds every answer waits before it is sent
        # (pause s, pieces): every answer's head goes at once, its body in pieces with a pause
        # before each, as a slow link or a provider streaming a large page sends it.
        self.trickle: tuple[float, int] | None = None
        self.requests: list[SeenRequest] = []
        self.rejected_429 = 0
        self.url = ""
        self._held: dict[tuple[str, Timeframe], _Held] = {}
        self._canned: dict[str, deque[dict[str, Any]]] = {}
        self._canned_grouped: dict[str, dict[str, Any]] = {}
        self._scripted: deque[tuple[int, dict[str, str], dict[str, Any]]] = deque()
        self._broken: deque[str] = deque()
        self._served: deque[float] = deque()  # arrival times of requests the budget let through
        self._runner: web.AppRunner | None = None
        self.splits: list[dict[str, Any]] = []  # as /v3/reference/splits lists them
        self.dividends: list[dict[str, Any]] = []
        self.tickers: dict[str, bool] = {}  # ticker -> active, besides every held one (active)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v2/aggs/ticker/{ticker}/range/{mult}/{span}/{frm}/{to}", self._aggs)
        app.router.add_get("/v2/aggs/grouped/locale/{locale}/market/{market}/{date}", self._grouped)
        app.router.add_get("/v3/reference/splits", self._splits)
        app.router.add_get("/v3/reference/dividends", self._dividends)
        app.router.add_get("/v3/reference/tickers/{ticker}", self._ticker)
        # No access log: the client under test must be the only thing that could leak a key.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what it holds ----------------------------------------------------------------------

    def hold(self, series: Series, bars: Bars) -> None:
        """Serve ``bars`` (sorted) as the whole history of ``series``; replaces what was held."""
        with_volume = series.asset_class is not AssetClass.INDEX
        rows = [_row_json(bars, i, with_volume) for i in range(len(bars))]
        self._held[(series.symbol, series.timeframe)] = _Held(series, bars, rows)

    async def hold_from(self, provider: Provider, series: Series, start_ms: int, end_ms: int) -> Bars:
        """Hold what ``provider`` (e.g. the demo one) has for the range; returns those bars."""
        bars = await provider.fetch_bars(series, start_ms, end_ms)
        self.hold(series, bars)
        return bars

    def held(self, series: Series) -> Bars:
        entry = self._held.get((series.symbol, series.timeframe))
        return entry.bars if entry is not None else Bars.empty()

    def readjust(self, symbol: str, factor: float) -> None:
        """A split by ``factor``: every held bar of ``symbol`` gets prices / factor, volume * factor."""
        for (held_symbol, _), entry in list(self._held.items()):
            if held_symbol != symbol:
                continue
            b = entry.bars
            prices = [np.round(x / factor, 4) for x in (b.open, b.high, b.low, b.close, b.vwap)]
            o, h, lo, c, vw = prices
            self.hold(entry.series, Bars(b.ts, o, h, lo, c, b.volume * factor, vw, b.trades))

    def split(self, symbol: str, day: str, split_to: int, split_from: int = 1) -> None:
        """A split executed on ``day`` (YYYY-MM-DD): every held bar of ``symbol`` before that
        day's New York midnight gets prices * from/to and volume * to/from, as adjusted bars do;
        the split is listed by /v3/reference/splits."""
        cut = _instant(day, end=False)
        factor = split_to / split_from
        for (held_symbol, _), entry in list(self._held.items()):
            if held_symbol != symbol:
                continue
            b = entry.bars
            before = b.ts < cut

            def adjust(x: np.ndarray, by: float, before: np.ndarray = before) -> np.ndarray:
                return np.where(before, np.round(x * by, 4), x)

            self.hold(entry.series, Bars(
                b.ts, *(adjust(x, 1 / factor) for x in (b.open, b.high, b.low, b.close)),
                np.where(before, b.volume * factor, b.volume), adjust(b.vwap, 1 / factor), b.trades,
            ))
        self.splits.append({"execution_date": day, "split_from": split_from, "split_to": split_to,
                            "ticker": symbol})

    def gap(self, series: Series, start_ms: int, end_ms: int) -> int:
        """Lose the held bars of ``series`` starting in [start_ms, end_ms]; returns how many."""
        b = self.held(series)
        keep = (b.ts < start_ms) | (b.ts > end_ms)
        self.hold(series, b.take(keep))
        return int(np.count_nonzero(~keep))

    def bad_print(self, series: Series, ts: int, move: float = 0.12) -> None:
        """The bar of ``series`` at ``ts`` closes ``move`` away (its high or low stretched to
        hold it); the next bar is as it was, so the print reverts."""
        b = self.held(series)
        i = int(np.flatnonzero(b.ts == ts)[0])
        close, high, low = b.close.copy(), b.high.copy(), b.low.copy()
        close[i] = round(close[i] * (1 + move), 4)
        high[i], low[i] = max(high[i], close[i]), min(low[i], close[i])
        self.hold(series, Bars(b.ts, b.open, high, low, close, b.volume, b.vwap, b.trades))

    def freeze(self, series: Series, ts: int, count: int) -> None:
        """``count`` bars of ``series`` from ``ts`` on print the first one's close as open, high,
        low, close and vwap, while their volume goes on: a stuck feed."""
        b = self.held(series)
        i = int(np.flatnonzero(b.ts == ts)[0])
        span = slice(i, i + count)
        cols = [x.copy() for x in (b.open, b.high, b.low, b.close, b.vwap)]
        for x in cols:
            x[span] = b.close[i]
        o, h, lo, c, vw = cols
        self.hold(series, Bars(b.ts, o, h, lo, c, b.volume, vw, b.trades))

    def canned(self, ticker: str, *pages: dict[str, Any]) -> None:
        """Answer custom-bar requests for ``ticker`` with these bodies in turn (the last repeats)."""
        self._canned[ticker] = deque(pages)

    def canned_grouped(self, day: str, body: dict[str, Any]) -> None:
        self._canned_grouped[day] = body

    # -- faults -----------------------------------------------------------------------------

    def fail_next(self, *statuses: int, retry_after: str | None = None,
                  body: dict[str, Any] | None = None) -> None:
        """The next requests (after auth and budget) get these statuses, in order."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        for status in statuses:
            doc = body or {"status": "ERROR", "request_id": uuid.uuid4().hex,
                           "error": f"scripted failure {status}"}
            self._scripted.append((status, headers, doc))

    def break_next(self, *how: str) -> None:
        """The next answers are broken: "garbage" (JSON cut in half, consistent length) or
        "cut" (the connection closes halfway through the announced body)."""
        self._broken.extend(how)

    # -- counting ---------------------------------------------------------------------------

    def paths(self, prefix: str = "/v2/aggs") -> list[str]:
        return [r.path for r in self.requests if r.path.startswith(prefix)]

    def max_in_window(self, window: float | None = None, statuses: tuple[int, ...] = (200,)) -> int:
        """The most answered requests (of these statuses) that arrived within any ``window``."""
        span = self.window if window is None else window
        times = np.array(sorted(r.at for r in self.requests if r.status in statuses))
        if not len(times):
            return 0
        return int((np.searchsorted(times, times + span, side="left") - np.arange(len(times))).max())

    # -- handlers ---------------------------------------------------------------------------

    async def _aggs(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, self._aggs_body)

    async def _grouped(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, self._grouped_body)

    async def _splits(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, lambda r: self._listing(r, self.splits, "execution_date"))

    async def _dividends(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, lambda r: self._listing(r, self.dividends, "ex_dividend_date"))

    async def _ticker(self, request: web.Request) -> web.StreamResponse:
        ticker = request.match_info["ticker"]
        held = any(symbol == ticker for symbol, _ in self._held) or ticker in self._canned
        if ticker not in self.tickers and not held:
            return await self._answer(request, lambda r: _NotFound(ticker))
        active = self.tickers.get(ticker, True)
        return await self._answer(request, lambda r: {
            "request_id": uuid.uuid4().hex, "status": "OK",
            "results": {"ticker": ticker, "active": active, "market": "stocks", "locale": "us"},
        })

    def _listing(self, request: web.Request, rows: list[dict[str, Any]], date_key: str) -> dict[str, Any]:
        cursor = request.query.get("cursor")
        query = _cursor_read(cursor) if cursor else dict(request.query)
        since = query.get(f"{date_key}.gte", "")
        chosen = sorted((r for r in rows if r[date_key] >= since), key=lambda r: r[date_key],
                        reverse=True)
        offset = int(query.get("offset", 0))
        page = chosen[offset: offset + self.page_size]
        body: dict[str, Any] = {"request_id": uuid.uuid4().hex, "status": "OK", "results": page}
        if offset + self.page_size < len(chosen):
            token = _cursor_make({**query, "offset": offset + self.page_size})
            body["next_url"] = f"{self.url}{request.path}?cursor={token}"
        return body

    async def _answer(self, request: web.Request, build) -> web.StreamResponse:
        arrived = time.monotonic()
        response = await self._respond(request, build, arrived)
        self.requests.append(
            SeenRequest(arrived, request.path, request.query_string, dict(request.headers),
                        response.status)
        )
        return response

    async def _respond(self, request: web.Request, build, arrived: float) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if (given or request.query.get("apiKey")) != self.api_key:
            return self._refused()
        if (wait := self._budget_wait(arrived)) > 0:
            self.rejected_429 += 1
            headers = {"Retry-After": f"{math.ceil(wait * 1000) / 1000:g}"} if self.retry_after else {}
            return web.json_response(
                {"status": "ERROR", "request_id": uuid.uuid4().hex,
                 "error": "You've exceeded the maximum requests per minute."},
                status=429, headers=headers,
            )
        if self._scripted and request.path.startswith("/v2/"):  # scripted faults hit bar requests
            status, headers, doc = self._scripted.popleft()
            return web.json_response(doc, status=status, headers=headers)
        if self.slow:
            await asyncio.sleep(self.slow)
        try:
            body = build(request)
            if isinstance(body, _NotFound):
                return web.json_response({"status": "NOT_FOUND", "request_id": uuid.uuid4().hex,
                                          "message": f"Ticker not found: {body.ticker}"}, status=404)
        except ValueError as exc:
            return web.json_response({"status": "ERROR", "request_id": uuid.uuid4().hex,
                                      "error": str(exc)}, status=400)
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        if self._broken:
            return await self._broken_answer(request, raw, self._broken.popleft())
        if self.trickle:
            return await self._trickled_answer(request, raw, *self.trickle)
        return web.Response(body=raw, content_type="application/json")

    async def _trickled_answer(
        self, request: web.Request, raw: bytes, pause: float, pieces: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(raw)
        await response.prepare(request)
        step = -(-len(raw) // pieces)
        for at in range(0, len(raw), step):
            await asyncio.sleep(pause)
            await response.write(raw[at : at + step])
        await response.write_eof()
        return response

    def _refused(self) -> web.Response:
        if self.auth_error == "error":
            doc = {"status": "ERROR", "request_id": uuid.uuid4().hex, "error": "Unknown API Key"}
        else:
            doc = {"status": "NOT_AUTHORIZED", "request_id": uuid.uuid4().hex,
                   "message": "You are not entitled to this data. Please upgrade your plan."}
        return web.json_response(doc, status=401)

    def _budget_wait(self, now: float) -> float:
        """0 when the request fits the budget (and is counted), else seconds until it would."""
        if not self.budget:
            return 0.0
        while self._served and self._served[0] + self.window <= now:
            self._served.popleft()
        if len(self._served) >= self.budget:
            return self._served[0] + self.window - now
        self._served.append(now)
        return 0.0

    async def _broken_answer(self, request: web.Request, raw: bytes, how: str) -> web.StreamResponse:
        half = raw[: len(raw) // 2]
        if how == "garbage":
            return web.Response(body=half, content_type="application/json")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(raw)
        await response.prepare(request)
        await response.write(half)
        assert request.transport is not None
        request.transport.close()  # the client sees a body shorter than announced
        return response

    def _aggs_body(self, request: web.Request) -> dict[str, Any] | str:
        m = request.match_info
        ticker = m["ticker"]
        if ticker in self._canned:
            pages = self._canned[ticker]
            return pages.popleft() if len(pages) > 1 else pages[0]
        tf = _TIMEFRAME_OF.get((int(m["mult"]), m["span"]))
        if tf is None:
            raise ValueError(f"unsupported range {m['mult']}/{m['span']}")
        cursor = request.query.get("cursor")
        query = _cursor_read(cursor) if cursor else dict(request.query)
        adjusted = query.get("adjusted", "true") == "true"
        limit = min(int(query.get("limit", 5000)), LIMIT_MAX)
        offset = int(query.get("offset", 0))
        entry = self._held.get((ticker, tf))
        if entry is None:
            index = np.empty(0, np.int64)
        else:
            lo = int(np.searchsorted(entry.bars.ts, _instant(m["frm"], end=False), side="left"))
            hi = int(np.searchsorted(entry.bars.ts, _instant(m["to"], end=True), side="right"))
            index = np.arange(lo, hi)
        if query.get("sort") == "desc":
            index = index[::-1]
        index = index[: max(1, limit // _base_per_bar(tf))]  # the limit counts base aggregates
        page = index[offset: offset + self.page_size]
        head: dict[str, Any] = {"ticker": ticker, "queryCount": len(index),
                                "resultsCount": len(page), "adjusted": adjusted, "status": "OK",
                                "request_id": uuid.uuid4().hex, "count": len(page)}
        if offset + self.page_size < len(index):
            token = _cursor_make({**query, "offset": offset + self.page_size})
            head["next_url"] = f"{self.url}{request.path}?cursor={token}"
        if not len(page):
            return head  # like Polygon: no "results" key at all
        assert entry is not None
        results = ",".join(entry.rows[i] for i in page.tolist())
        return json.dumps(head)[:-1] + f',"results":[{results}]}}'

    def _grouped_body(self, request: web.Request) -> dict[str, Any] | str:
        m = request.match_info
        day = m["date"]
        if day in self._canned_grouped:
            return self._canned_grouped[day]
        classes = _GROUPED_CLASSES.get((m["locale"], m["market"]))
        if classes is None:
            raise ValueError(f"unknown market {m['locale']}/{m['market']}")
        midnight = _instant(day, end=False)
        # The grouped endpoint stamps a day's bar at 16:00 New York (the fixture shows it).
        stamp = midnight + 16 * 3_600_000
        rows = []
        for entry in self._held.values():
            s = entry.series
            if s.timeframe is not Timeframe.D1 or s.asset_class not in classes:
                continue
            i = int(np.searchsorted(entry.bars.ts, midnight))
            if i < len(entry.bars) and entry.bars.ts[i] == midnight:
                rows.append(_row_json(entry.bars, i, True, ticker=s.symbol, t=stamp))
        head = {"adjusted": request.query.get("adjusted", "true") == "true",
                "queryCount": len(rows), "resultsCount": len(rows), "status": "OK",
                "request_id": uuid.uuid4().hex}
        if not rows:
            return head
        return json.dumps(head)[:-1] + f',"results":[{",".join(rows)}]}}'


@dataclass(frozen=True, slots=True)
class _NotFound:
    ticker: str


def _base_per_bar(tf: Timeframe) -> int:
    """Base aggregates one bar is built from: minutes for intraday bars, days otherwise."""
    return tf.ms // MS_PER_MINUTE if tf.is_intraday else tf.ms // MS_PER_DAY


def _instant(text: str, *, end: bool) -> int:
    """A path's from/to: epoch ms, or a date meaning its New York day (inclusive)."""
    if text.isdigit():
        return int(text)
    day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=NEW_YORK)
    if end:
        day += timedelta(days=1)
    return int(day.timestamp() * 1000) - (1 if end else 0)


def _cursor_make(query: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(query).encode()).decode()


def _cursor_read(token: str) -> dict[str, Any]:
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise ValueError("invalid cursor") from None
