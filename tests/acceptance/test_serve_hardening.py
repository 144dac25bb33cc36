"""The installed ``enrichctl serve``, as a process, against DNS rebinding and idle connections.

A rebound name (``Host: attacker.example``) is refused for every method and changes nothing.
Under a low open-files limit (256, set in the child before it starts), 600 silent and
half-sent connections must neither starve a normal GET nor stay open.
Nothing is timed: every wait is bounded only so that a broken server fails instead of hanging.
"""

from __future__ import annotations

import json
import resource
import socket

from .served import API, BOUND, http, serve
from .workspace import Workspace

FD_LIMIT = 256


def _low_fd_limit() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


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
