"""Bad input, for every command: one clear line on stderr, the documented exit code, no usage
block or traceback, and nothing stored changes; on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from .workspace import Result, Workspace

NOPE_DB = "sqlite:////proc/nope/x.db"  # /proc refuses new directories even to root
DB_PASSWORD = "pg-TESTSECRET-789"
# Nothing listens on port 9 (discard): the connection is refused at once.
UNREACHABLE_PG = f"postgresql://enrich:{DB_PASSWORD}@127.0.0.1:9/market"

# (id, arguments, exit code, text the one line must contain)
CASES: list[tuple[str, tuple[str, ...], int, str]] = [
    ("run-symbol-format", ("run", "--symbols", "AA PL", "--provider", "demo"), 2, "'AA PL'"),
    ("status-symbol-format", ("status", "b@d"), 2, "'b@d'"),
    ("verify-symbol-format", ("verify", "b@d"), 2, "'b@d'"),
    ("run-timeframe", ("run", "-t", "2d", "--symbols", "AAPL", "--provider", "demo"), 2, "'2d'"),
    ("run-date", ("run", "--since", "2024-13-01", "--symbols", "AAPL", "--provider", "demo"), 2, "2024-13-01"),
    ("export-date", ("export", "AAPL", "--until", "2024-02-30"), 2, "2024-02-30"),
    ("run-provider", ("run", "--provider", "bogus"), 2, "bogus"),
    ("missing-config-file", ("--config", "/nope.toml", "status"), 78, "/nope.toml"),
    ("unknown-config-key", ("--config", "{bad_config}", "run", "--provider", "demo"), 78, "max_retires"),
    ("unwritable-database-run", ("--database-url", NOPE_DB, "run", "--provider", "demo", "--symbols", "AAPL"), 78, "/proc/nope"),
    ("unreachable-postgresql", ("--database-url", UNREACHABLE_PG, "status"), 75, "enrich:***@127.0.0.1:9/market"),
    ("history-limit-0", ("history", "--limit", "0"), 2, "--limit"),
    ("export-unknown-symbol", ("export", "ZZZZ"), 1, "ZZZZ"),
    ("export-format", ("export", "AAPL", "--format", "xml"), 2, "--format"),
    ("unknown-command", ("frobnicate",), 2, "frobnicate"),
]


@pytest.fixture(scope="module")
def attempts(filled: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every bad command against a copy of the filled database, with its dump before and after."""
    ws = filled.clone(tmp_path_factory.mktemp("bad-input"))
    bad_config = ws.write("bad.toml", 'provider = "demo"\nmax_retires = 3\n')
    before = ws.dump()
    argvs = [tuple(a.format(bad_config=bad_config) for a in args) for _, args, _, _ in CASES]
    results = dict(zip((c[0] for c in CASES), ws.many(argvs), strict=True))
    return {"results": results, "before": before, "after": ws.dump(), "ws": ws}


@pytest.mark.parametrize(("case", "code", "needle"), [(c[0], c[2], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line_and_the_documented_code(attempts: dict, case: str, code: int, needle: str) -> None:
    result: Result = attempts["results"][case]
    assert result.code == code, result
    assert len(result.err_lines) == 1, result
    line = result.err_lines[0]
    assert line.startswith("enrichctl: error: ") and needle in line, result
    assert "Traceback" not in line and "Usage:" not in line, result
    assert result.out == "", result
    assert DB_PASSWORD not in line, "the database password must never be printed"


def test_bad_input_changes_nothing_stored(attempts: dict) -> None:
    assert attempts["after"] == attempts["before"]
    assert not Path("/proc/nope").exists()
