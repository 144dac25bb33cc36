"""``[metrics] textfile_path``: a timer-only machine gets the same metrics as ``serve``'s
``/metrics``, written by the installed ``enrichctl run`` for node_exporter's textfile collector.

The file must appear after a run (also a failed or skipped one), be replaced by rename rather than
rewritten in place, leave no temporary file behind, and be read by a real node_exporter without
a parse error (Debian's ``prometheus-node-exporter``; skipped without it except under CI=true).
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from needs import program
from prometheus_client.parser import text_string_to_metric_families

from .workspace import AS_OF, SINCE, Workspace

NODE_EXPORTERS = ("prometheus-node-exporter", "node_exporter")


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text()) for s in family.samples}


def configure(ws: Workspace, textfile: Path) -> None:
    config = ws.config_home / "enrichctl" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[metrics]\ntextfile_path = "{textfile}"\n')


def test_run_writes_the_metrics_textfile_atomically_after_every_run(machine: Workspace) -> None:
    directory = machine.root / "textfile"
    directory.mkdir()
    textfile = directory / "enrichctl.prom"
    configure(machine, textfile)
    first = machine("run", "--symbols", "AAPL", "--provider", "demo", "--as-of", AS_OF, "--since", SINCE)
    assert first.code == 0, first
    values = samples(textfile)
    assert values[("enrichctl_runs", (("status", "succeeded"),))] == 1
    assert values[("enrichctl_series_bars", (("provider", "demo"), ("symbol", "AAPL"), ("synthetic", "true"),
                                             ("timeframe", "1d")))] == len(machine.bars("AAPL"))
    assert ("enrichctl_last_successful_run_timestamp_seconds", ()) in values
    inode = textfile.stat().st_ino

    assert machine("pause", "--reason", "maintenance").code == 0
    skipped = machine("run", "--symbols", "AAPL", "--provider", "demo", "--as-of", AS_OF, "--trigger", "timer")
    assert skipped.code == 0, skipped
    values = samples(textfile)
    assert values[("enrichctl_scheduler_paused", ())] == 1
    assert values[("enrichctl_runs", (("status", "skipped"),))] == 1
    assert textfile.stat().st_ino != inode, "the file must be replaced by a rename, not rewritten"
    assert sorted(p.name for p in directory.iterdir()) == ["enrichctl.prom"]
    assert textfile.stat().st_mode & 0o444 == 0o444


def test_a_textfile_that_cannot_be_written_is_one_warning_and_the_run_still_counts(machine: Workspace) -> None:
    configure(machine, machine.root / "missing-directory" / "enrichctl.prom")
    result = machine("run", "--symbols", "AAPL", "--provider", "demo", "--as-of", AS_OF, "--since", SINCE)
    assert result.code == 0, result
    warnings = [line for line in result.err_lines if "textfile" in line]
    assert warnings == [f"warning: cannot write the metrics textfile {machine.root}/missing-directory/"
                        "enrichctl.prom: No such file or directory"], result
    assert "Traceback" not in result.err
    assert len(machine.bars("AAPL")) > 0


def test_a_textfile_path_that_node_exporter_would_ignore_is_a_config_error(workspace: Workspace) -> None:
    configure(workspace, workspace.root / "enrichctl.txt")
    result = workspace("run", "--provider", "demo", "--as-of", AS_OF)
    assert result.code == 78, result
    assert "textfile_path" in result.err and "*.prom" in result.err
    assert len(result.err_lines) == 1, result


@pytest.fixture
def node_exporter() -> str:
    return program(*NODE_EXPORTERS, install="apt-get install prometheus-node-exporter")


def test_node_exporter_serves_the_textfile_without_a_parse_error(node_exporter: str, workspace: Workspace) -> None:
    directory = workspace.root / "textfile"
    directory.mkdir()
    configure(workspace, directory / "enrichctl.prom")
    result = workspace("run", "--symbols", "AAPL,MSFT", "--provider", "demo", "--as-of", AS_OF, "--since", SINCE)
    assert result.code == 0, result
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [node_exporter, "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={directory}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        text = _scrape(f"http://127.0.0.1:{port}/metrics", proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "node_textfile_scrape_error 0" in text, err
    assert 'enrichctl_series_bars{provider="demo",symbol="MSFT",synthetic="true",timeframe="1d"}' in text
    assert "enrichctl_provider_request_latency_seconds_bucket" in text


def _scrape(url: str, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                return response.read().decode()
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
