"""Imports run one way: faces -> service/runs -> work -> pipeline -> providers, resilience, store -> base.

Read with ``ast`` (nothing is imported), every import counts: at module level, inside a function
or under ``TYPE_CHECKING``. docs/architecture.md lists the upward imports that remain; the
layers below are the ones already clean, and this test keeps them so.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "enrichctl"

# The base: plain data and configuration, importing nothing above itself.
BASE = frozenset({"domain", "calendar", "indicatorspec", "loopback", "errors", "settings", "logs"})
# What each lower part of the package may import (a part is a top-level module or a package).
ALLOWED = {
    **{module: BASE for module in BASE},
    "store": BASE | {"store"},
    "providers": BASE | {"providers", "resilience"},
    "resilience": BASE | {"resilience"},
    "pipeline": BASE | {"pipeline", "providers", "resilience", "store"},
    # The life of a run across processes: below the use cases, above the data path of a series.
    "work": BASE | {"work", "pipeline", "providers", "resilience", "store"},
}
# Use cases that must not reach into a face (or, for the dashboard and the staleness it judges,
# the systemd unit renderer: the calendar questions are oncalendar's, below them).
FACES = frozenset({"web", "cli"})
FORBIDDEN = {
    "dashboard": FACES | {"systemd"},
    "staleness": FACES | {"systemd"},
    **{module: FACES for module in ("service", "runs", "chartbars", "exports", "inventory", "rundetail")},
}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_parts(tree: ast.AST) -> set[str]:
    """The parts of ``enrichctl`` a module imports (``from enrichctl import x`` names ``x``)."""
    parts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = (
                [f"enrichctl.{alias.name}" for alias in node.names]
                if node.module == "enrichctl"
                else [node.module]
            )
        else:
            continue
        parts.update(name.split(".")[1] for name in names if name.startswith("enrichctl."))
    return parts


def _upward_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        imported = _imported_parts(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if part in ALLOWED:
            bad = imported - ALLOWED[part] - {part}
        else:
            bad = imported & FORBIDDEN.get(part, frozenset())
        found += [f"{path.relative_to(PACKAGE.parent)} imports enrichctl.{name}" for name in sorted(bad)]
    return found


def test_no_lower_layer_imports_a_higher_one() -> None:
    assert _upward_imports() == []


def test_the_check_sees_an_upward_import() -> None:
    tree = ast.parse("from enrichctl.pipeline.calendar import NEW_YORK\nfrom enrichctl import systemd\n")
    assert _imported_parts(tree) == {"pipeline", "systemd"}
    assert "pipeline" not in ALLOWED["providers"] and "systemd" in FORBIDDEN["dashboard"]


def test_the_work_layer_sits_between_the_use_cases_and_the_pipeline() -> None:
    tree = ast.parse("from enrichctl import runs, notify\nfrom enrichctl.work.slots import Runner\n")
    assert _imported_parts(tree) == {"runs", "notify", "work"}
    assert {"runs", "service", "notify", "dashboard"}.isdisjoint(ALLOWED["work"])
    assert "work" not in ALLOWED["pipeline"] and "pipeline" in ALLOWED["work"]
