"""Text from the database or the command line never reaches a terminal raw, and one symbol rule
serves the CLI and the API."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .workspace import AS_OF, Workspace, one_error

# --- stored text never reaches a terminal raw ------------------------------------------------

REASON = "\x1b[31mRED\x1b[0m [/] \x07bell\nnext line \u202eevil"


def test_control_characters_in_a_pause_reason_are_escaped_on_the_terminal(
    filled: Workspace, tmp_path: Path
) -> None:
    ws = filled.clone(tmp_path / "paused")
    paused = ws("pause", "--reason", REASON)
    status = ws("status")
    terminal = ws.run_on_terminal("status")
    as_json = ws("status", "--json")
    for result in (paused, status, terminal):
        assert result.code == 0, result
        for raw in ("\x1b[31m", "\x07", "\u202e", "bell\nnext"):
            assert raw not in result.out, (raw, result)
    assert "\\x1b[31mRED\\x1b[0m [/] \\x07bell\\nnext line \\u202eevil" in status.out, status
    assert json.loads(as_json.out)["scheduler"]["paused_reason"] == REASON  # --json stays exact


def test_the_pause_event_log_line_escapes_the_reason(filled: Workspace, tmp_path: Path) -> None:
    ws = filled.clone(tmp_path / "logged")
    result = ws("--log-level", "INFO", "pause", "--reason", "\x1b[31mRED\x1b[0m")  # no blank: unquoted before
    assert result.code == 0, result
    assert "\x1b" not in result.err and "\x07" not in result.err, result
    assert len(result.err_lines) == 1, result


# --- one symbol rule for the CLI and the API -------------------------------------------------

# (text, valid) — ASCII letters, digits, "." and "-", after an optional X:/C:/I: prefix.
SYMBOLS = [("aapl", True), ("BRK.B", True), ("x:btcusd", True), ("ß", False), ("ﬀ", False),
           ("ǅ", False), ("İ", False), ("AAPL\n", False), ("ＡＡＰＬ", False)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def api(filled: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ws = filled.clone(tmp_path_factory.mktemp("api"))
    port = _free_port()
    proc = subprocess.Popen([ws.exe, "serve", "--port", str(port)], cwd=ws.root, env=ws.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/v1/enrichment"
    try:
        for _ in range(300):  # until it listens (a start costs a second or two)
            try:
                urllib.request.urlopen(f"{base}/dashboard/health", timeout=5).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited {proc.returncode}") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _api_status(base: str, symbol: str) -> tuple[int, str]:
    url = f"{base}/dashboard/job-status/{urllib.parse.quote(symbol, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()).get("detail", "")


def test_symbols_are_validated_the_same_way_on_the_cli_and_the_api(filled: Workspace, api: str) -> None:
    results = filled.many([("status", text) for text, _ in SYMBOLS])
    for (text, valid), cli in zip(SYMBOLS, results, strict=True):
        status, detail = _api_status(api, text)
        if valid:
            assert cli.code in (0, 1) and status in (200, 404), (text, cli, status)
        else:
            one_error(cli, 2, "invalid symbol")
            assert status == 400, (text, status)
            assert detail in cli.err_lines[0], (text, detail, cli.err_lines)


def test_a_folded_symbol_is_refused_not_upper_cased_into_another(workspace: Workspace) -> None:
    result = workspace("run", "--provider", "demo", "--symbols", "ﬀ,ß", "--as-of", AS_OF)
    one_error(result, 2, "'ﬀ'")
    assert not workspace.db_path.exists()
