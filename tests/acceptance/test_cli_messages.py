"""Help and messages: no literal ``\\[default: ...]``, ``--json`` explained, ``pause`` keeps its
reason and start, a pause is attributed without ``$USER``, ``config show`` names its file, and
``POST /trigger`` without a key gives advice an API client can follow."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

from .workspace import Workspace


def test_help_has_no_escaped_defaults_and_json_is_explained(workspace: Workspace) -> None:
    for argv in (("--help",), ("run", "--help"), ("status", "--help"), ("history", "--help"),
                 ("series", "list", "--help"), ("export", "--help")):
        result = workspace(*argv)
        assert result.code == 0 and "\\[" not in result.out, result
    assert "[default: text]" in workspace("--help").out
    for command in ("status", "history", "metrics", "pause", "resume", "verify"):
        text = workspace(command, "--help").out
        line = next(line for line in text.splitlines() if "--json" in line)
        assert "JSON" in line.replace("--json", ""), text


def test_pause_without_a_reason_keeps_the_reason_and_since_and_names_the_user(machine: Workspace) -> None:
    env = {k: v for k, v in machine.env.items() if k not in ("USER", "LOGNAME")}
    first = machine("pause", "--reason", "vendor outage", "--json")
    doc = json.loads(first.out)
    time.sleep(1.1)
    again = subprocess.run([machine.exe, "pause", "--json"], cwd=machine.root, env=env,
                           capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    kept = json.loads(again.stdout)
    assert kept["reason"] == "vendor outage" and kept["since"] == doc["since"]
    status = json.loads(machine("status", "--json").out)["scheduler"]
    assert status["paused_reason"] == "vendor outage" and status["paused_since"] == doc["since"]
    # Without $USER (a systemd service, a container) the pause still names an account.
    machine("resume")
    anonymous = subprocess.run([machine.exe, "pause", "--json"], cwd=machine.root, env=env,
                               capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    by = json.loads(anonymous.stdout)["by"]
    assert not by.startswith("unknown@") and by.split("@")[0] == subprocess.run(
        ["id", "-un"], capture_output=True, text=True, check=True).stdout.strip(), by


def test_config_show_names_the_file_it_read(workspace: Workspace) -> None:
    none = workspace("config", "show")
    assert none.code == 0 and none.out.startswith("# no config file found (looked for "), none
    config = workspace.write("mine.toml", 'provider = "demo"\n')
    text = workspace("--config", str(config), "config", "show")
    assert text.out.splitlines()[0].startswith(f"# read from {config}"), text
    doc = json.loads(workspace("--config", str(config), "config", "show", "--json").out)
    assert doc["source"] == str(config) and doc["provider"] == "demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_trigger_without_a_key_answers_advice_for_the_api_client(workspace: Workspace) -> None:
    port = _free_port()
    proc = subprocess.Popen([workspace.exe, "serve", "--port", str(port)], cwd=workspace.root,
                            env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/enrichment/trigger"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5)
                raise AssertionError("the trigger started a run without a key")
            except urllib.error.HTTPError as exc:
                status, body = exc.code, json.loads(exc.read())
                break
            except (ConnectionError, urllib.error.URLError):
                assert time.monotonic() < deadline, "serve did not listen"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
    assert status == 503 and body["error"] == "config_error", body
    assert "--provider" not in body["detail"] and "operator" in body["detail"], body
    assert "POLYGON_API_KEY" in body["detail"]
