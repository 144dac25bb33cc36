"""``config show`` (secrets redacted), ``config check`` and ``--version``."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from .workspace import Workspace

SECRET = "sk-TESTSECRET-123"
DB_PASSWORD = "pg-TESTSECRET-456"


def test_config_show_never_prints_the_key_and_flags_win_over_env_over_file(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, env={
        "POLYGON_API_KEY": SECRET,
        "ENRICHCTL_MAX_RETRIES": "2",
        "DATABASE_URL": f"sqlite:///{tmp_path}/from-env.db",
    })
    config = ws.write("enrichctl.toml", 'provider = "demo"\nmax_retries = 1\nmax_concurrent_symbols = 7\n')
    flag_db = f"sqlite:///{tmp_path}/from-flag.db"
    text, as_json, check = ws.many([
        ("config", "show"),
        ("--database-url", flag_db, "config", "show", "--json"),
        ("--config", str(config), "config", "check"),
    ])
    for result in (text, as_json, check):
        assert result.code == 0, result
        assert SECRET not in result.out and SECRET not in result.err, result
        assert "TESTSECRET" not in result.out + result.err, result

    assert "polygon.api_key = " in text.out, text
    doc = json.loads(as_json.out)
    assert doc["polygon"]["api_key"] not in (None, "") and "*" in doc["polygon"]["api_key"]
    # ./enrichctl.toml is found in the working directory; env beats it; the flag beats env.
    assert (doc["provider"], doc["max_concurrent_symbols"]) == ("demo", 7)
    assert doc["max_retries"] == 2
    assert doc["database_url"] == flag_db
    assert check.out.startswith("ok: provider demo"), check


def test_config_never_prints_the_postgresql_password_of_database_url(tmp_path: Path) -> None:
    # The seed's DATABASE_URL form, as a user of a shared PostgreSQL writes it.
    ws = Workspace(tmp_path, env={"DATABASE_URL": f"postgresql://enrich:{DB_PASSWORD}@db.internal:5432/market",
                                  "ENRICHCTL_PROVIDER": "demo"})
    text, as_json, check = ws.many([("config", "show"), ("config", "show", "--json"), ("config", "check")])
    for result in (text, as_json, check):
        assert result.code == 0, result
        assert "TESTSECRET" not in result.out + result.err, result
    redacted = "postgresql://enrich:***@db.internal:5432/market"
    assert json.loads(as_json.out)["database_url"] == redacted
    assert redacted in text.out and redacted in check.out, check


def test_config_check_rejects_an_unknown_key_and_a_wrong_type_in_one_line(workspace: Workspace) -> None:
    unknown = workspace.write("unknown.toml", 'provider = "demo"\nmax_retires = 3\n')
    wrong = workspace.write("wrong.toml", '[polygon]\nrequests_per_minute = "five"\n')
    results = workspace.many([("--config", str(unknown), "config", "check"),
                              ("--config", str(wrong), "config", "check")])
    for result, key in zip(results, ("max_retires", "polygon.requests_per_minute"), strict=True):
        assert result.code == 78, result
        assert len(result.err_lines) == 1 and key in result.err, result
        assert result.out == "" and "Traceback" not in result.err


def test_version_is_the_installed_package_version(workspace: Workspace) -> None:
    result = workspace("--version")
    assert result.code == 0, result
    assert result.out.strip() == f"enrichctl {version('enrichctl')}"
