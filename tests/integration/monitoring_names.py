"""The metric names the monitoring bundle uses, and the names a Prometheus exposition has."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
METRIC_RE = re.compile(r"\benrichctl_[a-z0-9_]+")


def used_names() -> dict[str, set[str]]:
    return {name: set(METRIC_RE.findall((MONITORING / name).read_text()))
            for name in ("alerts.yml", "grafana-dashboard.json")}


def exposed_names(text: str) -> set[str]:
    """Family names (TYPE lines, even without samples) and every sample name (``_bucket``...)."""
    names = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
    return names
