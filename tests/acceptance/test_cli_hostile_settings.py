"""Settings a person can get wrong: unusable numbers, a blank token, a misspelt or non-JSON
ENRICHCTL_* variable, a calendar that would inject lines into a unit. One clear line and exit 78
(or a warning), never an internal error, a hang or a unit systemd would read otherwise."""

from __future__ import annotations

import json
import re
import socket

import pytest

from .workspace import AS_OF, Workspace, one_error

DEMO = 'provider = "demo"\n'


# --- settings: finite, bounded numbers; no blank token; the environment's JSON ---------------

BAD_SETTINGS = [
    ("timeout-inf", DEMO + "[polygon]\ntimeout_seconds = inf\n", "polygon.timeout_seconds"),
    ("timeout-nan", DEMO + "[polygon]\ntimeout_seconds = nan\n", "polygon.timeout_seconds"),
    ("retry-delay-huge", DEMO + "retry_delay_seconds = 1e308\n", "retry_delay_seconds"),
    ("retry-max-delay-inf", DEMO + "[resilience]\nretry_max_delay = inf\n", "resilience.retry_max_delay"),
    ("rate-window-huge", DEMO + "[polygon]\nrate_window_seconds = 1e300\n", "polygon.rate_window_seconds"),
    ("blank-token-public", DEMO + '[serve]\nhost = "0.0.0.0"\ntoken = "   "\n', "serve.token"),
    ("host-newline", DEMO + '[serve]\nhost = "127.0.0.1\\nX"\n', "serve.host"),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in BAD_SETTINGS], ids=[c[0] for c in BAD_SETTINGS])
def test_unusable_numbers_and_a_blank_token_fail_config_check_naming_the_key(
    workspace: Workspace, text: str, key: str
) -> None:
    config = str(workspace.write("bad.toml", text))
    one_error(workspace("--config", config, "config", "check"), 78, key)


def test_a_run_with_a_huge_retry_delay_fails_at_once_instead_of_hanging(workspace: Workspace) -> None:
    config = str(workspace.write("bad.toml", DEMO + "retry_delay_seconds = 1e308\n"))
    result = workspace("--config", config, "run", "--symbols", "AAPL", "--as-of", AS_OF, timeout=120)
    one_error(result, 78, "retry_delay_seconds")
    assert not workspace.db_path.exists(), "nothing may be created before the settings are good"


def test_serve_refuses_a_whitespace_token_on_a_public_address(workspace: Workspace) -> None:
    config = str(workspace.write("tok.toml", DEMO + '[serve]\ntoken = " \\t "\n'))
    result = workspace("--config", config, "serve", "--host", "0.0.0.0", "--port", str(_free_port()), timeout=60)
    one_error(result, 78, "serve.token", "blank")


def test_a_timeframes_variable_that_is_not_json_says_a_json_list_is_expected(workspace: Workspace) -> None:
    result = workspace("config", "check", env={"ENRICHCTL_TIMEFRAMES": "1d", "ENRICHCTL_PROVIDER": "demo"})
    one_error(result, 78, "ENRICHCTL_TIMEFRAMES", "JSON list", '["1d", "1h"]')


def test_misspelt_variables_are_named_with_a_suggestion_and_json_stdout_stays_json(workspace: Workspace) -> None:
    env = {"ENRICHCTL_POLYGON_REQUESTS_PER_MINUTE": "100", "ENRICHCTL_PROVDER": "demo",
           "ENRICHCTL_POLYGON__REQUESTS_PER_MINUTE": "7"}
    result = workspace("config", "show", "--json", env=env)
    assert result.code == 0, result
    assert json.loads(result.out)["polygon"]["requests_per_minute"] == 7
    assert result.err_lines == [
        "enrichctl: warning: unknown environment variable ENRICHCTL_POLYGON_REQUESTS_PER_MINUTE is "
        "ignored; did you mean ENRICHCTL_POLYGON__REQUESTS_PER_MINUTE?",
        "enrichctl: warning: unknown environment variable ENRICHCTL_PROVDER is ignored; "
        "did you mean ENRICHCTL_PROVIDER?",
    ], result
    logged = workspace("--log-format", "json", "config", "show", "--json", env=env)
    events = [json.loads(line) for line in logged.err_lines]
    assert [e["variable"] for e in events] == ["ENRICHCTL_POLYGON_REQUESTS_PER_MINUTE", "ENRICHCTL_PROVDER"]
    assert {e["event"] for e in events} == {"unknown_environment_variable"}


def test_known_variables_raise_no_warning(workspace: Workspace) -> None:
    env = {"ENRICHCTL_PROVIDER": "demo", "ENRICHCTL_HISTORY_DAYS__1D": "10",
           "ENRICHCTL_SERVE__PORT": "8001", "ENRICHCTL_DEBUG": ""}
    result = workspace("config", "show", "--json", env=env)
    assert result.code == 0 and result.err == "", result


# --- systemd render validates like config check ----------------------------------------------

@pytest.mark.parametrize("calendar", ['daily\\n[Service]\\nExecStart=/bin/sh -c evil', "every tuesday at noon"],
                         ids=["newline", "invalid"])
def test_systemd_render_refuses_a_calendar_config_check_refuses(workspace: Workspace, calendar: str) -> None:
    config = str(workspace.write("cal.toml", DEMO + f'[schedule]\non_calendar = "{calendar}"\n'))
    units = workspace.root / "units"
    check = workspace("--config", config, "config", "check")
    render = workspace("--config", config, "systemd", "render", "--user", "-o", str(units))
    one_error(check, 78, "schedule.on_calendar")
    one_error(render, 78, "schedule.on_calendar")
    assert not units.exists(), "no unit may be written from a calendar config check rejects"


def test_rendered_units_have_no_value_with_a_line_break(workspace: Workspace) -> None:
    config = str(workspace.write("ok.toml", DEMO))
    units = workspace.root / "units"
    assert workspace("--config", config, "systemd", "render", "--user", "-o", str(units)).code == 0
    timer = (units / "enrichctl.timer").read_text()
    assert re.findall(r"^\[\w+\]$", timer, re.M) == ["[Unit]", "[Timer]", "[Install]"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
