"""``serve``'s connections over real loopback sockets: idle ones are closed, a full server makes
room by closing the longest-idle one, and answers 503 only when every connection is busy.

The server is ``web.serve_main`` itself (the guard sits in its listener, not in a test server).
Nothing is timed: every wait is bounded only so that a broken server fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from enrichctl import systemd
from enrichctl.settings import Settings
from enrichctl.web import connections as webconn
from enrichctl.web import server as web

if TYPE_CHECKING:
    from conftest import Database  # the ``db`` fixture: one empty database per backend

API = "/api/v1/enrichment"
BOUND = 30.0  # seconds: only a server that is broken takes this long


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[int]:
    """``serve_main`` on 127.0.0.1; its port once it answers."""
    port = _free_port()
    server = asyncio.create_task(web.serve_main(settings, "127.0.0.1", port))
    try:
        async with asyncio.timeout(BOUND):
            while True:
                try:
                    status, _ = await request(port, f"GET {API}/dashboard/health")
                    assert status in (200, 503)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        yield port
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def request(port: int, line: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{line} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        async with asyncio.timeout(BOUND):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, content = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), content


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes the connection (EOF or reset), False if it sent data instead."""
    async with asyncio.timeout(BOUND):
        try:
            return await reader.read(1) == b""
        except ConnectionResetError:
            return True


async def test_idle_and_half_sent_connections_are_closed(db: Database) -> None:
    settings = db.settings(["AAPL"], serve={"idle_timeout_seconds": 0.5})
    async with serving(settings) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        half = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        for _, writer in half:  # headers that never end
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        kept_alive = await asyncio.open_connection("127.0.0.1", port)
        kept_alive[1].write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert (await kept_alive[0].readline()).startswith(b"HTTP/1.1 200")
        # ... and the answered one, kept alive, is closed once idle too (after its body).
        for reader, _ in [*idle, *half]:
            assert await closed_by_server(reader)
        async with asyncio.timeout(BOUND):
            rest = await kept_alive[0].read()  # the rest of the answer, then EOF
        assert b"enrichctl_" in rest
        assert (await request(port, "GET /metrics"))[0] == 200
        for _, writer in [*idle, *half, kept_alive]:
            writer.close()


async def test_a_full_server_closes_its_longest_idle_connection_for_a_new_one(db: Database) -> None:
    settings = db.settings(["AAPL"], serve={"max_connections": 4, "idle_timeout_seconds": 600})
    async with serving(settings) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        # Each new connection takes the place of the oldest idle one: a normal GET still answers.
        status, _ = await request(port, f"GET {API}/dashboard/overview")
        assert status == 200
        assert await closed_by_server(idle[0][0]), "the longest-idle connection made room"
        for _, writer in idle:
            writer.close()


async def test_a_server_whose_connections_are_all_busy_answers_503_then_recovers(db: Database) -> None:
    settings = db.settings(["AAPL"], serve={"max_connections": 2, "idle_timeout_seconds": 1})
    async with serving(settings) as port:
        busy = []
        for _ in range(2):  # a pause whose body never completes: a request in progress
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST {API}/pause HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 100\r\n"
                         "Expect: 100-continue\r\n\r\n{".encode())
            async with asyncio.timeout(BOUND):  # the server has started the request
                assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            busy.append((reader, writer))
        status, body = await request(port, "GET /metrics")
        assert status == 503 and json.loads(body)["error"] == "too_many_connections"
        # The bodies time out (408, one line of JSON) and their connections become idle.
        for reader, writer in busy:
            async with asyncio.timeout(BOUND):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), head
            writer.close()
        async with asyncio.timeout(BOUND):
            while (status := (await request(port, "GET /metrics"))[0]) == 503:
                await asyncio.sleep(0.1)
        assert status == 200


def test_the_serve_unit_holds_more_descriptors_than_the_default_cap_needs() -> None:
    text = systemd.render_units(Settings(), user=False, executable="/usr/local/bin/enrichctl",
                                config_path="/etc/enrichctl/config.toml")[systemd.SERVE_SERVICE]
    limits = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("LimitNOFILE=")]
    assert limits == ["8192"]
    assert int(limits[0]) >= Settings().serve.max_connections + webconn.RESERVED_FDS


async def test_a_burst_of_connections_never_holds_more_than_the_cap(db: Database) -> None:
    """Accepted together, connections are counted as they arrive: at most ``max_connections`` stay
    open (the rest were closed to make room, or refused 503), however fast they come."""
    settings = db.settings(["AAPL"], serve={"max_connections": 4, "idle_timeout_seconds": 600})
    async with serving(settings) as port:
        burst = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(40)))
        answered = []
        for reader, writer in burst:
            try:
                writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                async with asyncio.timeout(BOUND):
                    answered.append(await reader.readline())
            except ConnectionError:
                answered.append(b"")
        served = [line for line in answered if line.startswith(b"HTTP/1.1 200")]
        assert 1 <= len(served) <= 4, answered
        assert all(line in (b"", b"HTTP/1.1 503 Service Unavailable\r\n") for line in answered
                   if line not in served)
        for _, writer in burst:
            writer.close()


async def test_a_slow_reader_still_receives_the_whole_answer(db: Database) -> None:
    """An answer still being delivered is not idle: a client reading slowly (a small receive
    buffer, pauses between reads) gets all of it, though it takes longer than the idle timeout."""
    settings = db.settings(["AAPL"], serve={"idle_timeout_seconds": 0.5})
    path = "/static/vendor/lightweight-charts.standalone.production.js"
    async with serving(settings) as port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        received = b""
        async with asyncio.timeout(BOUND * 2):
            while chunk := await reader.read(4096):
                received += chunk
                await asyncio.sleep(0.02)  # a slow reader: ~40 pauses of the idle timeout's length in all
        writer.close()
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        assert len(body) == length > 100_000, (len(body), length)
