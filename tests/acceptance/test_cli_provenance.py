"""Synthetic data says so wherever a person or a program reads it: the ``status``, ``history``
and ``metrics`` tables (also at 80 columns), their ``--json``, ``export`` (a ``provider`` and a
``synthetic`` column that keep CSV and JSONL parseable) and Prometheus (a label). Real data
carries no marker."""

from __future__ import annotations

import asyncio
import csv
import io
import json

from prometheus_client.parser import text_string_to_metric_families

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

from .fake_polygon_thread import fake_polygon, polygon_config
from .workspace import AS_OF, Workspace

MARK = "(demo)"
NOTE = "synthetic data from the demo provider, not market data"


def test_the_tables_mark_synthetic_data_even_at_80_columns(filled: Workspace) -> None:
    narrow = {"COLUMNS": "80"}
    status, one, history, metrics = filled.many([
        ("status",), ("status", "AAPL"), ("history",), ("metrics",)])
    for result in (status, one, history):
        assert result.code == 0, result
        assert MARK in result.out and NOTE in result.out, result
    assert next(x for x in status.out.splitlines() if "AAPL" in x).count(MARK) == 1
    assert f"1d {MARK}" in one.out and "from demo" in one.out
    assert metrics.code == 0 and "2 of 2 stored series hold synthetic data" in metrics.out, metrics
    for args in (("status",), ("history",), ("status", "AAPL")):
        result = filled(*args, env=narrow)
        assert MARK in result.out and NOTE in result.out, result
        assert all(len(line) <= 80 for line in result.out.splitlines()), result


def test_the_documents_say_synthetic(filled: Workspace) -> None:
    status, metrics = (json.loads(r.out) for r in filled.many([("status", "--json"), ("metrics", "--json")]))
    aapl = next(s for s in status["processing_symbols"] if s["symbol"] == "AAPL")
    assert (aapl["provider"], aapl["synthetic"]) == ("demo", True)
    assert status["totals"]["synthetic_series"] == 2
    assert metrics["data_quality"]["series_by_provider"] == {"demo": 2}
    assert metrics["data_quality"]["synthetic_series"] == 2


def test_export_has_provider_and_synthetic_columns(filled: Workspace, tmp_path) -> None:
    out = tmp_path / "aapl.jsonl"
    as_csv, as_jsonl = filled.many([("export", "AAPL"), ("export", "AAPL", "--format", "jsonl", "--indicators", "-o", str(out))])
    assert as_csv.code == 0 and as_jsonl.code == 0, (as_csv, as_jsonl)
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert rows and all(r["provider"] == "demo" and r["synthetic"] == "true" for r in rows)
    assert all(None not in r and len(r) == len(rows[0]) for r in rows)  # every row has every field
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(d["provider"] == "demo" and d["synthetic"] is True for d in lines)
    assert "rsi_14" in lines[-1]


def test_prometheus_labels_synthetic_series(filled: Workspace) -> None:
    text = _exposition(filled)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("enrichctl_series_bars", "enrichctl_series_stale", "enrichctl_series_quality_score"):
        assert {(s.labels["symbol"], s.labels["provider"], s.labels["synthetic"])
                for s in families[name].samples} == {("AAPL", "demo", "true"), ("MSFT", "demo", "true")}


def _exposition(ws: Workspace) -> str:
    """What ``GET /metrics`` serves for this workspace's database (one scrape of ``serve``)."""
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([ws.exe, "serve", "--port", str(port)], cwd=ws.root, env=ws.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    return response.read().decode()
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stderr.read().decode()) from None
                time.sleep(0.1)
        raise AssertionError("serve did not answer")
    finally:
        proc.terminate()
        proc.wait(10)


def test_real_data_carries_no_marker(machine: Workspace) -> None:
    with fake_polygon() as fake:
        demo = DemoProvider(SessionCalendar())
        asyncio.run(fake.hold_from(demo, Series("AAPL", AssetClass.STOCK, Timeframe.D1),
                                   1_704_067_200_000, 1_717_545_600_000))
        config = machine.write("polygon.toml", polygon_config(fake, symbols=("AAPL",)))
        base = ("--config", str(config))
        assert machine(*base, "run", "--as-of", AS_OF, "--since", "2024-01-01").code == 0
        status, history = machine(*base, "status"), machine(*base, "history")
        assert MARK not in status.out + history.out and NOTE not in status.out + history.out
        rows = list(csv.DictReader(io.StringIO(machine(*base, "export", "AAPL").out)))
        assert {(r["provider"], r["synthetic"]) for r in rows} == {("polygon", "false")}
