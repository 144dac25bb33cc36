"""A provider that does not answer at all (a closed port, a name that does not resolve) ends the
run at once with exit 75 ("try later") and one line naming the cause; the failed jobs and
``history`` carry that cause, not only "circuit open". Each run gets a 60 s subprocess timeout:
the default recovery timeout (30 s) and job retries would take far longer. A silent server with
default settings is bounded too, since the default read timeout is short (see the README)."""

from __future__ import annotations

import json
import socket
import time

from .workspace import AS_OF, Workspace

API_KEY = "unreachable-test-key-5f2c"
SYMBOLS = ("AAPL", "MSFT", "NVDA")


def _closed_port() -> int:
    """A loopback port nobody listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(ws: Workspace, base_url: str, extra: str = "") -> str:
    universe = ", ".join(f'{{ symbol = "{s}" }}' for s in SYMBOLS)
    return str(ws.write("unreachable.toml", (
        f'provider = "polygon"\nuniverse = [{universe}]\n'
        f'[polygon]\nbase_url = "{base_url}"\napi_key = "{API_KEY}"\nrequests_per_minute = 0\n'
        f'{extra}'
    )))


def _unreachable_run(
    ws: Workspace, base_url: str, cause: str, extra: str = "", *, timeout: float = 60
) -> float:
    """Run against ``base_url``, check the run and its records name ``cause``; the run's seconds."""
    config = _config(ws, base_url, extra)
    # Error logs only: one log event per failed job, and one line that ends the run.
    started = time.monotonic()
    result = ws("--config", config, "--log-level", "ERROR", "run", "--as-of", AS_OF,
                "--since", "2024-05-01", "--json", timeout=timeout)
    elapsed = time.monotonic() - started
    assert result.code == 75, result
    said = [line for line in result.err_lines if " error enrichment_failed " not in line]
    assert len(said) == 1, result
    line = said[0]
    assert line.startswith("enrichctl: error: provider unreachable: ") and cause in line, result
    assert "Traceback" not in result.err and API_KEY not in result.err + result.out, result
    report = json.loads(result.out)
    assert report["jobs_failed"] == len(SYMBOLS), result
    assert all(cause in j["error"] for j in report["jobs"]), result

    history = ws("--config", config, "history", "--json")
    assert history.code == 0, history
    run = json.loads(history.out)["runs"][0]
    assert run["status"] == "failed" and cause in run["error"], history
    detail = ws("--config", config, "history", str(run["run_id"]), "--json")
    assert detail.code == 0, detail
    jobs = json.loads(detail.out)["jobs"]
    assert len(jobs) == len(SYMBOLS) and all(cause in j["error"] for j in jobs), detail
    assert API_KEY not in history.out + detail.out
    # Two transport failures before any answer open the breaker (a wave in flight together counts
    # together); nothing is sent after that (no 30 s recovery wait, no job retries).
    attempts = ws.query("SELECT count(*) FROM requests")[0][0]
    assert attempts <= 6, attempts
    return elapsed


def test_a_closed_port_ends_the_run_with_75_naming_the_refused_connection(workspace: Workspace) -> None:
    port = _closed_port()
    _unreachable_run(workspace, f"http://127.0.0.1:{port}",
                     f"cannot connect to 127.0.0.1:{port} (connection refused)")


def test_an_unresolvable_host_ends_the_run_with_75_naming_the_lookup(workspace: Workspace) -> None:
    _unreachable_run(workspace, "http://nonexistent.invalid", "nonexistent.invalid")


def test_a_server_that_never_answers_ends_the_run_with_75_naming_the_timeout(workspace: Workspace) -> None:
    # Listening, so connections are accepted by the kernel, but nothing is ever read or sent.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        _unreachable_run(workspace, f"http://127.0.0.1:{port}",
                         f"no answer from 127.0.0.1:{port} within 0.5 s", "timeout_seconds = 0.5\n")


def test_a_silent_server_with_default_settings_ends_the_run_within_about_30_s(
    workspace: Workspace,
) -> None:
    """No timeout override: the defaults alone give up on a provider that never answers. (With
    one 30 s timeout per request and five failures to open the breaker it took about 60 s.)"""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        # A generous process timeout: a slow run should fail the bound below, not hang the suite.
        elapsed = _unreachable_run(workspace, f"http://127.0.0.1:{port}",
                                   f"no answer from 127.0.0.1:{port} within ", timeout=240)
    print(f"silent provider, default settings: the run ended after {elapsed:.1f} s")
    assert elapsed < 40, f"the run took {elapsed:.1f} s"
