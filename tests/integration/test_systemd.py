"""The rendered units pass systemd's own offline checks with no warning at all, score an exposure
of 2.0 or lower, and the schedule questions are answered by systemd's calendar parser.

Needs ``systemd-analyze``; skipped without it, except under ``CI=true`` where that fails.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from needs import program

from enrichctl import oncalendar, systemd
from enrichctl.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ENRICHCTL = Path(sys.executable).parent / "enrichctl"
SERVICES = (systemd.RUN_SERVICE, systemd.SERVE_SERVICE)
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


@pytest.fixture(scope="module")
def analyze() -> str:
    return program("systemd-analyze", install="apt-get install systemd")


def _run_analyze(analyze: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # warning level: systemd's debug chatter about this machine is not a finding about our units
    environment = {**os.environ, "SYSTEMD_LOG_LEVEL": "warning", "SYSTEMD_COLORS": "0",
                   "LC_ALL": "C", **(env or {})}
    return subprocess.run([analyze, *args], capture_output=True, text=True, env=environment,
                          timeout=60, check=False)


def _settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def _rendered(tmp_path: Path, *, user: bool, settings: Settings | None = None,
              executable: Path = ENRICHCTL) -> dict[str, Path]:
    config = tmp_path / "config.toml"
    config.write_text("provider = 'polygon'\n")
    written = systemd.units_render_to(
        settings or _settings(), user=user, output=tmp_path / ("user" if user else "system"),
        config_path=config, executable=str(executable),
    )
    return {p.name: p for p in written}


def _directives(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, in order (unit files repeat keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


@pytest.fixture
def system_units(tmp_path: Path) -> dict[str, Path]:
    return _rendered(tmp_path, user=False)


@pytest.fixture
def user_runtime(tmp_path: Path) -> Iterator[dict[str, str]]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    yield {"XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}


# --- what the units say ----------------------------------------------------------------------


def test_the_timer_fires_on_the_configured_calendar_with_a_fixed_per_host_delay(tmp_path: Path) -> None:
    settings = _settings(schedule={"on_calendar": "Mon..Fri 22:15 America/New_York",
                                   "randomized_delay_seconds": 600})
    timer = _directives(_rendered(tmp_path, user=False, settings=settings)[systemd.RUN_TIMER].read_text())
    assert timer["Timer"]["OnCalendar"] == ["Mon..Fri 22:15 America/New_York"]
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["RandomizedDelaySec"] == ["600"]
    assert timer["Timer"]["FixedRandomDelay"] == ["true"]
    assert timer["Timer"]["Unit"] == [systemd.RUN_SERVICE]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_the_run_service_is_a_timer_run_with_state_credentials_and_a_failure_hook(
    system_units: dict[str, Path],
) -> None:
    service = _directives(system_units[systemd.RUN_SERVICE].read_text())["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [f"{ENRICHCTL} --config %d/{systemd.CONFIG_CREDENTIAL} run --trigger timer"]
    assert service["StateDirectory"] == ["enrichctl"]
    assert "polygon_api_key:/etc/enrichctl/polygon_api_key" in service["LoadCredential"]
    assert service["KillSignal"] == ["SIGTERM"] and service["TimeoutStopSec"] == ["90s"]
    assert service["TimeoutStartSec"] == ["2h"]
    hook = _directives(system_units[systemd.RUN_SERVICE].read_text())["Unit"]["OnFailure"]
    assert hook == ["enrichctl-failure@%n.service"] and systemd.FAILURE_SERVICE in system_units


def test_the_serve_service_restarts_and_gets_its_token_as_a_credential(system_units: dict[str, Path]) -> None:
    service = _directives(system_units[systemd.SERVE_SERVICE].read_text())["Service"]
    assert service["ExecStart"] == [f"{ENRICHCTL} --config %d/{systemd.CONFIG_CREDENTIAL} serve"]
    assert service["Restart"] == ["on-failure"]
    assert "serve_token:/etc/enrichctl/serve_token" in service["LoadCredential"]


def test_user_units_carry_nothing_a_user_manager_cannot_do(tmp_path: Path) -> None:
    units = _rendered(tmp_path, user=True)
    system_only = ("DynamicUser", "User", "ProtectSystem", "ProtectHome", "PrivateTmp",
                   "CapabilityBoundingSet", "IPAddressDeny", "StateDirectory", "ProtectProc")
    for name in SERVICES:
        service = _directives(units[name].read_text())["Service"]
        assert not set(system_only) & set(service), f"{name}: {set(system_only) & set(service)}"
        assert service["MemoryDenyWriteExecute"] == ["yes"]
        assert service["ExecStart"][0].startswith(f"{ENRICHCTL} --config {tmp_path / 'config.toml'} ")
    assert _directives(units[systemd.SERVE_SERVICE].read_text())["Install"]["WantedBy"] == ["default.target"]


def test_an_interpreter_under_a_home_directory_is_bound_into_the_sandbox(tmp_path: Path) -> None:
    venv = tmp_path / "home" / "ann" / "venv"
    units = systemd.render_units(_settings(), user=False, executable="/home/ann/venv/bin/enrichctl",
                                 config_path=None)
    service = _directives(units[systemd.RUN_SERVICE])["Service"]
    assert service["ProtectHome"] == ["tmpfs"]
    assert service["BindReadOnlyPaths"] == ["/home/ann/venv"]
    assert not venv.exists()  # nothing is touched by rendering


def test_offline_demo_on_sqlite_gets_no_network_and_no_key(tmp_path: Path) -> None:
    units = _rendered(tmp_path, user=False, settings=_settings(provider="demo"))
    run = _directives(units[systemd.RUN_SERVICE].read_text())["Service"]
    serve = _directives(units[systemd.SERVE_SERVICE].read_text())["Service"]
    assert run["IPAddressDeny"] == ["any"]
    assert not any(c.startswith("polygon_api_key") for c in run["LoadCredential"])
    assert serve["IPAddressDeny"] == ["any"] and serve["IPAddressAllow"] == ["localhost"]


def test_the_reference_units_in_the_repository_are_a_current_rendering() -> None:
    units = systemd.render_units(_settings(), user=False, executable="/usr/local/bin/enrichctl",
                                 config_path="/etc/enrichctl/config.toml")
    for name, text in units.items():
        assert (REPO / "systemd" / name).read_text() == text, f"systemd/{name} is stale: render it again"


def test_units_are_written_world_readable_into_the_user_unit_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert systemd.units_dir_default(user=True) == tmp_path / "cfg" / "systemd" / "user"
    assert systemd.units_dir_default(user=False) == Path("/etc/systemd/system")
    written = systemd.units_render_to(_settings(), user=True, executable=str(ENRICHCTL))
    assert sorted(p.name for p in written) == sorted(
        [systemd.RUN_SERVICE, systemd.RUN_TIMER, systemd.SERVE_SERVICE, systemd.FAILURE_SERVICE])
    assert all(p.parent == tmp_path / "cfg" / "systemd" / "user" for p in written)
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in written)


# --- systemd's offline checks ----------------------------------------------------------------


def test_system_units_verify_without_any_warning(analyze: str, system_units: dict[str, Path]) -> None:
    result = _run_analyze(analyze, "verify", *map(str, system_units.values()))
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_user_units_verify_without_any_warning(analyze: str, tmp_path: Path,
                                               user_runtime: dict[str, str]) -> None:
    units = _rendered(tmp_path, user=True)
    result = _run_analyze(analyze, "--user", "verify", *map(str, units.values()), env=user_runtime)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_an_executable_that_is_not_there(analyze: str, tmp_path: Path) -> None:
    units = _rendered(tmp_path, user=False, executable=tmp_path / "missing" / "enrichctl")
    result = _run_analyze(analyze, "verify", str(units[systemd.RUN_SERVICE]))
    assert "is not executable" in result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_services_score_an_exposure_of_at_most_2(analyze: str, system_units: dict[str, Path], name: str) -> None:
    result = _run_analyze(analyze, "security", "--offline=yes", "--threshold=20", str(system_units[name]))
    assert result.returncode == 0, result.stdout + result.stderr
    match = EXPOSURE_RE.search(result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= 2.0, result.stdout


def test_the_configured_schedule_is_a_valid_calendar(analyze: str) -> None:
    expression = _settings().schedule.on_calendar
    result = _run_analyze(analyze, "calendar", expression)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "Next elapse:" in result.stdout
    assert oncalendar.calendar_check(expression) is None


def test_a_broken_calendar_is_reported_with_systemds_reason(analyze: str) -> None:
    problem = oncalendar.calendar_check("every day at noon")
    assert problem is not None and "every day at noon" in problem
    assert oncalendar.calendar_check("  ") == "the calendar expression is empty"


# --- next_elapse -----------------------------------------------------------------------------


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_next_elapse_of_the_default_schedule_is_the_next_0130_utc(analyze: str) -> None:
    expression = "*-*-* 01:30:00 UTC"
    assert oncalendar.next_elapse(expression, _ms("2024-03-10T12:00:00")) == _ms("2024-03-11T01:30:00")
    assert oncalendar.next_elapse(expression, _ms("2024-03-11T01:00:00")) == _ms("2024-03-11T01:30:00")
    # once that elapse has passed, the answer moves on (a long-running serve never shows a stale one)
    assert oncalendar.next_elapse(expression, _ms("2024-03-11T01:30:01")) == _ms("2024-03-12T01:30:00")
    # and an earlier "now" is not answered from a later cache entry
    assert oncalendar.next_elapse(expression, _ms("2024-03-01T00:00:00")) == _ms("2024-03-01T01:30:00")


def test_next_elapse_follows_a_time_zone_and_defaults_to_now(analyze: str) -> None:
    # 22:15 in New York is 02:15 UTC the next day in summer time
    assert (oncalendar.next_elapse("*-*-* 22:15 America/New_York", _ms("2024-07-01T12:00:00"))
            == _ms("2024-07-02T02:15:00"))
    upcoming = oncalendar.next_elapse("*-*-* 01:30:00 UTC")
    now = datetime.now(UTC).timestamp() * 1000
    assert upcoming is not None and now < upcoming <= now + 86_400_000


def test_next_elapse_is_none_for_a_past_date_a_bad_expression_or_no_systemd(
    analyze: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert oncalendar.next_elapse("2001-01-01 00:00:00 UTC", _ms("2024-01-01T00:00:00")) is None
    assert oncalendar.next_elapse("not a calendar") is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no systemd-analyze on it
    assert oncalendar.next_elapse("*-*-* 04:04:04 UTC") is None
    assert oncalendar.calendar_check("not a calendar either") is None


# --- MemoryDenyWriteExecute= does not break the pipeline ------------------------------------

PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
_UNDER_MDWE = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(97)
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_a_run_works_without_writable_executable_memory(tmp_path: Path) -> None:
    """The kernel's own MemoryDenyWriteExecute (PR_SET_MDWE, Linux 6.3+), inherited across exec:
    CPython, numpy, TA-Lib, aiosqlite and the demo provider run a whole pipeline under it.

    With polars installed (the test extra), as on a research machine: TA-Lib imports polars when
    it can, and polars cannot be imported under MDWE, so this also proves the run never does."""
    assert importlib.util.find_spec("polars") is not None, "install the test extra: pip install '.[test]'"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) < 0 and ctypes.get_errno() == 22:  # EINVAL
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    db = tmp_path / "mdwe.db"
    result = subprocess.run(
        [sys.executable, "-c", _UNDER_MDWE, str(ENRICHCTL), "--database-url", f"sqlite:///{db}",
         "run", "--provider", "demo", "--symbols", "AAPL,X:BTCUSD", "--since", "2023-01-01",
         "--as-of", "2024-06-03T00:00", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"status": "succeeded"' in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", _UNDER_MDWE, sys.executable, "-c",
         "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert probe.returncode != 0 and "Permission denied" in probe.stderr  # the restriction was on


@pytest.mark.parametrize(("textfile", "expected"), [
    ("/run/enrichctl-metrics/enrichctl.prom",
     {"RuntimeDirectory": ["enrichctl-metrics"], "RuntimeDirectoryMode": ["0755"],
      "RuntimeDirectoryPreserve": ["yes"]}),
    ("/var/lib/prometheus/node-exporter/enrichctl.prom",
     {"ReadWritePaths": ["-/var/lib/prometheus/node-exporter"]}),
])
def test_a_metrics_textfile_is_writable_from_the_run_sandbox_and_readable_by_node_exporter(
    analyze: str, tmp_path: Path, textfile: str, expected: dict[str, list[str]]
) -> None:
    units = _rendered(tmp_path, user=False, settings=_settings(metrics={"textfile_path": textfile}))
    run = _directives(units[systemd.RUN_SERVICE].read_text())["Service"]
    for key, values in expected.items():
        assert run[key] == values, key
    serve = _directives(units[systemd.SERVE_SERVICE].read_text())["Service"]
    assert "RuntimeDirectory" not in serve and "ReadWritePaths" not in serve  # only run writes it
    result = _run_analyze(analyze, "verify", *map(str, units.values()))
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
