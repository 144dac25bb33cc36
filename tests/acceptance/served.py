"""The installed ``enrichctl serve`` as a process on a free loopback port, and one-shot HTTP
requests to it over a raw socket (so nothing of the client library hides what the server sent)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .workspace import Workspace

API = "/api/v1/enrichment"
BOUND = 30.0  # seconds: only a server that is broken takes this long


@dataclass(slots=True)
class Served:
    port: int
    output: list[str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    ws: Workspace, *args: str, preexec: Callable[[], None] | None = None,
    before: tuple[str, ...] = (),
) -> Iterator[Served]:
    """``enrichctl [BEFORE] serve --host 127.0.0.1 --port P [ARGS]`` with the demo provider, until
    SIGTERM; its output after. ``before``: global options (``--config FILE``)."""
    port = _free_port()
    proc = subprocess.Popen(
        [ws.exe, *before, "serve", "--host", "127.0.0.1", "--port", str(port), *args], cwd=ws.root,
        env={**ws.env, "ENRICHCTL_PROVIDER": "demo"}, preexec_fn=preexec,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    served = Served(port, [])
    try:
        deadline = time.monotonic() + BOUND
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                http(port, "GET", f"{API}/dashboard/health")
                break
            except OSError:
                assert time.monotonic() < deadline, "serve did not start listening"
                time.sleep(0.05)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        served.output.append(out)
        print(f"--- enrichctl serve output (exit {proc.returncode})\n{out}")


def http(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    head = {"Host": f"127.0.0.1:{port}", "Connection": "close", "Content-Length": "0", **(headers or {})}
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\n".encode()
                     + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    status_line, _, rest = b"".join(chunks).partition(b"\r\n")
    return int(status_line.split(b" ", 2)[1]), rest.partition(b"\r\n\r\n")[2]
