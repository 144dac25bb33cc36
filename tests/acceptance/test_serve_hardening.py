"""The installed ``enrichctl serve``, as a process, against DNS rebinding and idle connections.

A rebound name (``Host: attacker.example``) is refused for every method and changes nothing.
Under a low open-files limit (256, set in the child before it starts), 600 silent and
half-sent connections must neither starve a normal GET nor stay open.
Nothing is timed: every wait is bounded only so that a broken server fails instead of hanging.
"""

from __future__ import annotations

import json
import resource
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
FD_LIMIT = 256


@dataclass(slots=True)
class Served:
    port: int
    output: list[str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _low_fd_limit() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@contextmanager
def serve(ws: Workspace, preexec: Callable[[], None] | None = None) -> Iterator[Served]:
    """``enrichctl serve`` on 127.0.0.1 with the demo provider, until SIGTERM; its output after."""
    port = _free_port()
    proc = subprocess.Popen(
        [ws.exe, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=ws.root,
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


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_rebound_host_name_is_refused_for_every_method(workspace: Workspace) -> None:
    with serve(workspace) as served:
        port = served.port
        evil = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
        for method, path in (("POST", f"{API}/pause"), ("POST", f"{API}/trigger"),
                             ("GET", f"{API}/dashboard/overview"), ("GET", "/")):
            status, body = http(port, method, path, evil)
            assert status == 421, (method, path, status)
            assert json.loads(body)["error"] == "misdirected_request"
        status, body = http(port, "GET", f"{API}/dashboard/overview", {"Host": f"localhost:{port}"})
        assert status == 200 and json.loads(body)["scheduler"]["paused"] is False
        assert json.loads(http(port, "GET", f"{API}/history")[1])["runs"] == [], "no run was triggered"
    assert "Traceback" not in served.output[0]


def test_hundreds_of_idle_connections_under_256_fds_neither_starve_a_get_nor_stay_open(
    workspace: Workspace,
) -> None:
    with serve(workspace, preexec=_low_fd_limit) as served:
        port = served.port
        idle: list[socket.socket] = []
        for i in range(600):  # more than the process may hold: half silent, half half-sent
            sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
            if i % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ended
            idle.append(sock)
        status, body = http(port, "GET", f"{API}/dashboard/overview")
        assert status == 200 and "scheduler" in json.loads(body)
        assert all(_closed_by_server(sock) for sock in idle), "every idle connection is closed"
        for sock in idle:
            sock.close()
        assert http(port, "GET", "/metrics")[0] == 200
    output = served.output[0]
    assert "Too many open files" not in output and "Traceback" not in output
    assert "serve_connections_capped" in output, "the cap was lowered to fit 256 descriptors"
