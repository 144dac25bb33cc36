"""``serve``'s connections: a cap on how many are open at once, and a deadline for idle ones.

Left alone, a connection that never sends a request (or sends half of its headers) stays open
for good, and a few hundred of them exhaust the file descriptors: accept() fails and a normal
GET times out. So every connection with no request in progress is closed ``idle_timeout``
seconds after it opened or after its last request was answered (the headers of a request must
arrive within that time, and a kept-alive connection waits no longer for the next one). At most
``max_connections`` are open at once: a new one closes the longest-idle one to take its place,
and is answered 503 only when every open connection is busy with a request.

The guard wraps each of aiohttp's protocol objects in a thin one that reports when its
connection opens and closes; the app's middleware reports when a request starts and ends.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from enrichctl.logs import get_logger, log_event

log = get_logger("web")

ACCEPT_BACKLOG = 64
# Descriptors kept for what is not a connection (the listening socket, the database, logs, the
# event loop) and for a burst of accepted sockets not yet handed to the guard (up to two
# backlogs: accept() runs ahead of the protocol factory by one turn of the loop).
RESERVED_FDS = 2 * ACCEPT_BACKLOG + 32
_FULL_LOG_EVERY = 60.0  # seconds between two "connections full" warnings under a flood

_REFUSED_BODY = (b'{"error":"too_many_connections","detail":"every connection this server may '
                 b'hold is busy with a request (serve.max_connections); try again shortly"}')
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nCache-Control: no-store\r\n"
            b"Content-Length: " + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY)


def connections_cap(max_connections: int) -> tuple[int, int | None]:
    """``(cap, fd_limit)``: raise the soft RLIMIT_NOFILE toward what ``max_connections`` needs
    (up to the hard limit) and lower the cap to what the limit then allows (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass  # keep the soft limit there is; the cap below fits it
    if soft == resource.RLIM_INFINITY:
        return max_connections, None
    return max(1, min(max_connections, soft - RESERVED_FDS)), soft


@dataclass(slots=True)
class _Connection:
    idle_since: float
    made: bool = False  # asyncio has called connection_made: it has a transport to close
    busy: int = 0


class ConnectionGuard:
    """Caps the open connections and closes idle ones (see the module's docstring)."""

    def __init__(self, max_connections: int, idle_timeout: float) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._open: dict[RequestHandler, _Connection] = {}
        self.closed_idle = 0
        self.evicted = 0
        self.refused = 0
        self._full_logged_at: float | None = None

    @property
    def open_count(self) -> int:
        return len(self._open)

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """What ``loop.create_server`` calls for every accepted connection."""
        def make() -> asyncio.Protocol:
            if len(self._open) >= self.max_connections and not self._evict_idlest():
                self.refused += 1
                self._log_full()
                return _Refused()
            # Counted from here, not from connection_made a turn later: a burst of accepts would
            # otherwise all see room and overshoot the cap (and the descriptors) together.
            handler = server()
            loop = asyncio.get_running_loop()
            self._open[handler] = _Connection(idle_since=loop.time())
            loop.call_later(self.idle_timeout, self._expire, handler)
            return _Tracked(self, handler)
        return make

    # --- what the protocol and the middleware report ----------------------------------------

    def made(self, handler: RequestHandler) -> None:
        if (conn := self._open.get(handler)) is not None:
            conn.made = True

    def closed(self, handler: RequestHandler) -> None:
        self._open.pop(handler, None)

    def request_started(self, handler: object) -> None:
        if (conn := self._open.get(handler)) is not None:  # type: ignore[call-overload]
            conn.busy += 1

    def request_finished(self, handler: object) -> None:
        if (conn := self._open.get(handler)) is not None:  # type: ignore[call-overload]
            conn.busy -= 1
            conn.idle_since = asyncio.get_running_loop().time()

    # --- closing ------------------------------------------------------------------------------

    def _expire(self, handler: RequestHandler) -> None:
        """The idle deadline: close the connection, or look again when it can next be due (the
        timer is checked lazily, as aiohttp's keep-alive one is, rather than moved per request)."""
        conn = self._open.get(handler)
        if conn is None:
            return
        if not conn.made:  # asyncio failed to set the connection up: nothing to close
            self._open.pop(handler, None)
            return
        loop = asyncio.get_running_loop()
        due = conn.idle_since + self.idle_timeout
        if conn.busy:
            loop.call_later(self.idle_timeout, self._expire, handler)
            return
        if loop.time() < due:
            loop.call_at(due, self._expire, handler)
            return
        self.closed_idle += 1
        self._close(handler)

    def _evict_idlest(self) -> bool:
        # Only a connection that is set up: closed before connection_made, aiohttp's handler
        # would never close the transport it is then given.
        idle = [(c.idle_since, id(h), h) for h, c in self._open.items() if c.made and not c.busy]
        if not idle:
            return False
        self.evicted += 1
        self._close(min(idle)[2])
        return True

    def _close(self, handler: RequestHandler) -> None:
        # Forgotten at once, not at connection_lost a turn later: it no longer counts.
        self._open.pop(handler, None)
        handler.force_close()

    def _log_full(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._full_logged_at is None or now - self._full_logged_at >= _FULL_LOG_EVERY:
            self._full_logged_at = now
            log_event(log, logging.WARNING, "serve_connections_full", open=len(self._open),
                      max_connections=self.max_connections, refused=self.refused)


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol object, reporting to the guard when its connection opens and closes."""

    __slots__ = ("_guard", "_handler")

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler) -> None:
        self._guard = guard
        self._handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard.made(self._handler)
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.closed(self._handler)
        self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class _Refused(asyncio.Protocol):
    """Answers 503 and closes: every connection the server may hold is busy."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSED)
        transport.close()
