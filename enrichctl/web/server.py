"""``enrichctl serve``: the dashboard JSON API, Prometheus ``/metrics``, ``/openapi.json`` and a page.

A thin shell over ``service.Session``: handlers parse and validate, call one use case, and return
its document unchanged (the very documents ``status|history|metrics --json`` print). Errors of
the ``errors`` tree become JSON ``{"error", "detail"}`` with their HTTP status; nothing else leaks.
State changes are POST only and need the bearer token when one is configured.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from enrichctl import service
from enrichctl.errors import (
    ConfigError,
    EnrichError,
    NotFound,
    RunActive,
    StoreError,
    TemporaryError,
    UsageError,
)
from enrichctl.logs import get_logger, log_event
from enrichctl.loopback import host_is_loopback
from enrichctl.providers.registry import provider_check
from enrichctl.settings import Settings
from enrichctl.web import openapi, prom, seriesbars
from enrichctl.web.cache import Rendered, SharedBuilds
from enrichctl.web.connections import ACCEPT_BACKLOG, ConnectionGuard, connections_cap
from enrichctl.web.hosts import HostPolicy
from enrichctl.web.page import page_routes
from enrichctl.web.params import (
    history_limit,
    pause_reason,
    query_check,
    symbol_param,
    trigger_options,
)

log = get_logger("web")

API = openapi.API  # one prefix: the routes here and the paths the description names
CLIENT_MAX_SIZE = 64 * 1024  # request bodies: a pause reason is the largest thing we accept


@dataclass(slots=True)
class AppState:
    settings: Settings
    token: bytes | None
    hosts: HostPolicy
    connections: ConnectionGuard
    builds: SharedBuilds = field(default_factory=SharedBuilds)
    runs: set[asyncio.Task[service.RunReport]] = field(default_factory=set)
    session: service.Session | None = None
    now: int | None = None  # a fixed instant (epoch ms) to judge staleness at, as status --as-of


STATE: web.AppKey[AppState] = web.AppKey("enrichctl_state", AppState)


class ApiError(Exception):
    """An HTTP error answered as ``{"error": code, "detail": detail}``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


# --- responses, errors, security ------------------------------------------------------------


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json_bytes(doc), status=status, headers=headers,
                        content_type="application/json")


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": code, "detail": detail}, status, headers)


# Most specific first (RunActive is a TemporaryError). ``public``: the message is meant for the
# client; otherwise the client gets a generic line and the server log the message.
_ERROR_STATUS: tuple[tuple[type[EnrichError], int, str, bool], ...] = (
    (UsageError, 400, "bad_request", True),
    (NotFound, 404, "not_found", True),
    (RunActive, 409, "run_active", True),
    (TemporaryError, 503, "temporarily_unavailable", True),
    (StoreError, 503, "store_unavailable", False),
    # The server's own configuration (e.g. no provider key): not the client's fault.
    (ConfigError, 503, "config_error", True),
)
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               408: "request_timeout", 421: "misdirected_request"}
_PASSED_HEADERS = ("Allow", "WWW-Authenticate")
_GENERIC_DETAIL = "the request failed on the server; see its log"


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error becomes JSON with its status; an unexpected one is logged and answered 500
    with a generic message (no traceback, no exception text reaches the client)."""
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.detail, exc.headers)
    except web.HTTPException as exc:  # aiohttp's own: unknown route, wrong method, body too large
        if exc.status < 400:
            raise
        headers = {h: exc.headers[h] for h in _PASSED_HEADERS if h in exc.headers}
        response = error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"),
                                  _http_detail(request, exc), headers)
    except EnrichError as exc:
        status, code, public = next(
            ((s, c, p) for kind, s, c, p in _ERROR_STATUS if isinstance(exc, kind)),
            (500, "internal_error", False),
        )
        if not public:
            log_event(log, logging.ERROR, "serve_request_failed", method=request.method,
                      path=request.path, error=exc.message)
        response = error_response(status, code, exc.message if public else _GENERIC_DETAIL)
    except Exception:  # the boundary: log it with its traceback, answer a generic 500
        log.exception("serve_unexpected_error",
                      extra={"fields": {"method": request.method, "path": request.path}})
        response = error_response(500, "internal_error", _GENERIC_DETAIL)
    _security_headers(response)
    return response


@web.middleware
async def connections_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Tell the connection guard a request is in progress: its connection is not idle."""
    guard = request.app[STATE].connections
    guard.request_started(request.protocol)
    try:
        return await handler(request)
    finally:
        guard.request_finished(request.protocol)


@web.middleware
async def hosts_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """421 for a request naming a host this server does not answer for (DNS rebinding), whatever
    its method or path; before anything else is read or done."""
    if (why := request.app[STATE].hosts.refusal(request.headers.get("Host"))) is not None:
        raise ApiError(421, "misdirected_request", why)
    return await handler(request)


def _http_detail(request: web.Request, exc: web.HTTPException) -> str:
    path = request.path[:200]
    if exc.status == 404:
        return f"no such path: {path} (the API is described at /openapi.json)"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "none")
        if allowed == "POST" and request.method in ("GET", "HEAD"):
            return f"state changes are never GET: send POST {path}"
        return f"{request.method} is not allowed on {path}; allowed: {allowed}"
    return exc.reason


def _security_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")


def _require_post_allowed(request: web.Request) -> None:
    """Refuse cross-origin browser POSTs (CSRF when no token is set), then check the token."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() not in (f"http://{request.host}".lower(),
                                                     f"https://{request.host}".lower()):
        raise ApiError(403, "forbidden", "cross-origin state changes are refused")
    token = request.app[STATE].token
    if token is None:
        return
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time taken does not tell how much of a guess was right.
    # surrogateescape: header bytes that are not UTF-8 arrive as surrogates; they only fail to match.
    offered = value.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered, token):
        raise ApiError(401, "unauthorized", "a valid bearer token is required for state changes",
                       {"WWW-Authenticate": 'Bearer realm="enrichctl"'})


# --- documents ------------------------------------------------------------------------------


def _session(request: web.Request) -> service.Session:
    session = request.app[STATE].session
    assert session is not None, "the session is opened by the app's cleanup context"
    return session


async def _document(request: web.Request, key: tuple[str, ...],
                    build: Callable[[service.Session], Awaitable[dict[str, Any]]]) -> Rendered:
    session = _session(request)

    async def rendered() -> Rendered:
        doc = await build(session)
        return Rendered(200, json_bytes(doc), doc)

    return await request.app[STATE].builds.get(key, rendered)


def _served(result: Rendered) -> web.Response:
    return web.Response(body=result.body, status=result.status, content_type="application/json")


async def overview(request: web.Request) -> web.Response:
    query_check(request.query, ())
    now = request.app[STATE].now
    return _served(await _document(request, ("overview",), lambda s: s.overview(now)))


async def health(request: web.Request) -> web.Response:
    """Derived from the shared overview build, as ``Session.health`` derives it from the overview."""
    query_check(request.query, ())
    now = request.app[STATE].now
    overview_doc = (await _document(request, ("overview",), lambda s: s.overview(now))).doc
    doc = service.health(overview_doc)
    return json_response(doc, 503 if doc["status"] == "unhealthy" else 200)


async def metrics(request: web.Request) -> web.Response:
    query_check(request.query, ())
    return _served(await _document(request, ("metrics",), lambda s: s.metrics()))


async def job_status(request: web.Request) -> web.Response:
    query_check(request.query, ())
    symbol = symbol_param(request.match_info["symbol"])
    now = request.app[STATE].now
    return _served(await _document(request, ("job-status", symbol), lambda s: s.job_status(symbol, now)))


async def history(request: web.Request) -> web.Response:
    limit = history_limit(request.query)
    return _served(await _document(request, ("history", str(limit)), lambda s: s.history(limit)))


async def series_bars(request: web.Request) -> web.Response:
    """A series' bars for the symbol page's chart (paged, or bucketed with ``max_points``)."""
    session = _session(request)
    query = seriesbars.bars_query_parse(request.match_info["symbol"], request.match_info["timeframe"],
                                        request.query, session.store.indicator_names)
    return json_response(await session.series_bars(query))


async def prometheus(request: web.Request) -> web.Response:
    body = await prom.exposition(_session(request))
    return web.Response(body=body, headers={"Content-Type": prom.CONTENT_TYPE})


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi.document(token_required=request.app[STATE].token is not None,
                                          indicators=_session(request).store.indicator_names))


# --- state changes --------------------------------------------------------------------------


async def pause(request: web.Request) -> web.Response:
    _require_post_allowed(request)
    reason = await pause_reason(request, request.app[STATE].settings.serve.idle_timeout_seconds)
    state = request.app[STATE]
    doc = await _session(request).pause(reason, by=f"api@{request.remote or 'unknown'}")
    state.builds.invalidate()
    return json_response(doc)


async def resume(request: web.Request) -> web.Response:
    _require_post_allowed(request)
    query_check(request.query, ())
    doc = await _session(request).resume()
    request.app[STATE].builds.invalidate()
    return json_response(doc)


async def trigger(request: web.Request) -> web.Response:
    """Start a run in the background; answer 202 with its id once its run row exists."""
    _require_post_allowed(request)
    options = trigger_options(request.query)
    state = request.app[STATE]
    provider_check(state.settings, for_api=True)  # advice an API client can act on
    if (active := await _session(request).active_run()) is not None:
        raise RunActive(f"run {active['run_id']} is active (host {active['host']}, pid {active['pid']}); "
                        "try again when it has finished")
    started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def progress(event: str, data: dict[str, Any]) -> None:
        if event == "plan" and not started.done():
            started.set_result(data)

    task = asyncio.create_task(service.run(state.settings, options, progress), name="enrichctl-api-run")
    state.runs.add(task)
    task.add_done_callback(lambda t: _run_done(state, t))
    waited: set[asyncio.Future[Any]] = {task, started}
    await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
    state.builds.invalidate()
    if not started.done():
        report = task.result()  # raises RunActive (lost the race for the lease), UsageError, ...
        return json_response({"run_id": report.run_id, "status": report.status,
                              "symbols": options.symbols, "jobs": len(report.jobs)}, 202)
    plan = started.result()["plan"]
    return json_response({"run_id": started.result()["run_id"], "status": "running",
                          "symbols": options.symbols, "jobs": len(plan.jobs)}, 202)


def _run_done(state: AppState, task: asyncio.Task[service.RunReport]) -> None:
    state.runs.discard(task)
    state.builds.invalidate()
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        level = logging.INFO if isinstance(exc, RunActive | UsageError) else logging.ERROR
        log_event(log, level, "serve_run_failed", error=getattr(exc, "message", type(exc).__name__))
    else:
        report = task.result()
        log_event(log, logging.INFO, "serve_run_finished", run_id=report.run_id, status=report.status)


# --- the app --------------------------------------------------------------------------------


def app_create(
    settings: Settings, bind_host: str | None = None, *, now: int | None = None
) -> web.Application:
    """The serve application for a server on ``bind_host`` (default ``serve.host``). Its session
    opens on startup and closes on cleanup, after the background runs it started have been
    cancelled and have recorded how they ended. ``now`` (epoch ms) fixes the instant the overview,
    health and job-status documents judge staleness at (tests; ``serve --as-of``)."""
    secret = settings.serve.token.get_secret_value() if settings.serve.token else ""
    hosts = HostPolicy.for_bind(bind_host or settings.serve.host, settings.serve.allowed_hosts)
    connections = ConnectionGuard(settings.serve.max_connections, settings.serve.idle_timeout_seconds)
    state = AppState(settings, secret.encode() if secret else None, hosts, connections, now=now)
    app = web.Application(middlewares=[connections_middleware, errors_middleware, hosts_middleware],
                          client_max_size=CLIENT_MAX_SIZE)
    app[STATE] = state
    app.cleanup_ctx.append(_session_context)
    app.add_routes(page_routes())
    app.add_routes([
        web.get("/openapi.json", openapi_json),
        web.get("/metrics", prometheus),
        web.get(f"{API}/dashboard/overview", overview),
        web.get(f"{API}/dashboard/health", health),
        web.get(f"{API}/dashboard/metrics", metrics),
        web.get(f"{API}/dashboard/job-status/{{symbol}}", job_status),
        web.get(f"{API}/history", history),
        web.get(f"{API}/series/{{symbol}}/{{timeframe}}/bars", series_bars),
    ])
    # POST only: aiohttp's 405 then names exactly what the route accepts in its Allow header.
    app.add_routes([web.post(f"{API}/{path}", handler)
                    for path, handler in (("trigger", trigger), ("pause", pause), ("resume", resume))])
    return app


async def _session_context(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    async with service.session_open(state.settings) as session:
        state.session = session
        try:
            yield
        finally:
            await runs_cancel(state)
            state.session = None


async def runs_cancel(state: AppState) -> None:
    """Cancel the background runs and wait until each has recorded itself cancelled."""
    tasks = list(state.runs)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def bind_check(host: str, settings: Settings) -> None:
    """ConfigError when the address is reachable from other machines and no token is set."""
    if not host_is_loopback(host) and not (settings.serve.token and settings.serve.token.get_secret_value()):
        raise ConfigError(
            f"refusing to serve on {host} without a token: anyone who can reach it could pause "
            "or trigger runs; set serve.token (ENRICHCTL_SERVE__TOKEN or the systemd credential "
            "serve_token) or bind 127.0.0.1"
        )


async def serve_main(
    settings: Settings, host: str | None, port: int | None, *, now: int | None = None
) -> None:
    """Serve until cancelled (SIGTERM/SIGINT), then stop background runs and close the store."""
    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    bind_check(host, settings)
    app = app_create(settings, host, now=now)
    if app[STATE].hosts.any_host:
        log_event(log, logging.WARNING, "serve_any_host", host=host,
                  hint="requests naming any host are answered; set serve.allowed_hosts to the "
                       "names clients use to refuse DNS rebinding here too")
    guard = app[STATE].connections
    guard.max_connections, fd_limit = connections_cap(settings.serve.max_connections)
    if guard.max_connections < settings.serve.max_connections:
        log_event(log, logging.WARNING, "serve_connections_capped", max_connections=guard.max_connections,
                  configured=settings.serve.max_connections, fd_limit=fd_limit,
                  hint="raise the open-files limit (LimitNOFILE=, ulimit -n) to hold more")
    idle = settings.serve.idle_timeout_seconds
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=idle)
    await runner.setup()
    listener: asyncio.Server | None = None
    try:
        assert runner.server is not None, "set up above"
        try:
            # Not aiohttp's TCPSite: every connection goes through the guard's protocol factory.
            listener = await asyncio.get_running_loop().create_server(
                guard.protocol_factory(runner.server), host, port, backlog=ACCEPT_BACKLOG)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        log_event(log, logging.INFO, "serve_listening", url=f"http://{_url_host(host)}:{port}/",
                  token_required=runner.app[STATE].token is not None,
                  max_connections=guard.max_connections, idle_timeout_seconds=idle)
        await asyncio.Event().wait()
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
