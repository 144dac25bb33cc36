"""systemd units for unattended operation.

``render_units`` writes the timer, the one-shot run service, the ``serve`` service and the
``OnFailure=`` hook with the installed executable's real path and the configured schedule, so
nobody edits a unit by hand. The calendar questions (``next_elapse``, ``calendar_check``) are
``oncalendar``'s.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from enrichctl.errors import ConfigError
from enrichctl.loopback import host_is_loopback
from enrichctl.oncalendar import calendar_check
from enrichctl.providers.registry import provider_entry
from enrichctl.settings import Settings

RUN_SERVICE = "enrichctl.service"
RUN_TIMER = "enrichctl.timer"
SERVE_SERVICE = "enrichctl-serve.service"
FAILURE_SERVICE = "enrichctl-failure@.service"

RUN_START_TIMEOUT = "2h"
# A stopped run commits what is complete and exits within seconds; SIGKILL follows after this.
RUN_STOP_TIMEOUT = "90s"
SERVE_STOP_TIMEOUT = "30s"

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_SECRETS_DIR = "/etc/enrichctl"
USER_SECRETS_DIR = "%E/enrichctl"  # %E: $XDG_CONFIG_HOME in a user manager
CONFIG_CREDENTIAL = "enrichctl.toml"
_HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))

# Seccomp- and prctl-based settings need no privilege: the units of either manager get them.
_COMMON_HARDENING = """\
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# CPython, numpy and TA-Lib need no writable+executable memory (checked by the test suite).
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM"""

# Sandboxing every unit gets from a system manager. Together with DynamicUser= this scores an
# exposure of about 1.0 in `systemd-analyze security` (the test fails above 2.0).
_SYSTEM_HARDENING = """\
# A transient unprivileged user; every enrichctl unit names the same one so they share the state.
DynamicUser=yes
User=enrichctl
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateUsers=yes
PrivateIPC=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
KeyringMode=private
RemoveIPC=yes
""" + _COMMON_HARDENING

# A user manager runs unprivileged: everything that needs a mount namespace (ProtectSystem=,
# ProtectHome=, PrivateTmp=, PrivateDevices=, ProtectKernel*=, ProtectProc=, ...), a capability
# bounding set, DynamicUser= or IP firewalling (BPF) is unavailable or fails the start there.
# These seccomp- and prctl-based settings work for an unprivileged user.
_USER_HARDENING = """\
UMask=0077
NoNewPrivileges=yes
""" + _COMMON_HARDENING


# --- rendering ------------------------------------------------------------------------------


def render_units(
    settings: Settings, *, user: bool, executable: str, config_path: str | None
) -> dict[str, str]:
    """The unit files (name -> text) for this installation: ``executable`` is the absolute path
    of the ``enrichctl`` to run, ``config_path`` the settings file the services must read."""
    exe = Path(executable)
    if not exe.is_absolute():
        raise ValueError(f"executable must be an absolute path, not {executable!r}")
    on_calendar = settings.schedule.on_calendar
    # The same verdict as `config check`: a timer systemd refuses is not written.
    if (problem := calendar_check(on_calendar)) is not None:
        raise ConfigError(f"schedule.on_calendar {on_calendar!r}: {problem}")
    config = Path(config_path).absolute() if config_path else None
    context = _UnitContext(settings, user, exe, config)
    units = {
        RUN_TIMER: _timer(settings),
        RUN_SERVICE: _run_service(context),
        SERVE_SERVICE: _serve_service(context),
        FAILURE_SERVICE: _failure_service(context),
    }
    for name, text in units.items():
        _sections_check(name, text)
    return units


_SECTIONS = {
    RUN_TIMER: ["[Unit]", "[Timer]", "[Install]"],
    RUN_SERVICE: ["[Unit]", "[Service]"],
    SERVE_SERVICE: ["[Unit]", "[Service]", "[Install]"],
    FAILURE_SERVICE: ["[Unit]", "[Service]"],
}


def _sections_check(name: str, text: str) -> None:
    """A value with a line break would open a section of its own (``[Service]`` in the timer):
    the rendered units hold exactly the sections written here, or nothing is written."""
    found = [m.strip() for m in re.findall(r"^[ \t]*\[[^\]\n]*\][ \t]*$", text, re.M)]
    if found != _SECTIONS[name]:
        raise ConfigError(f"{name}: a configured value would add a section {found!r} to the unit")


def units_dir_default(user: bool) -> Path:
    """Where ``systemctl`` looks for administrator units: ~/.config/systemd/user or /etc/systemd/system."""
    if not user:
        return SYSTEM_UNIT_DIR
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user"


def write_units(directory: Path, units: dict[str, str]) -> list[Path]:
    """Write each unit (mode 0644) into ``directory``, creating it; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)
        written.append(path)
    return written


def executable_default() -> str:
    """The absolute path of the running ``enrichctl`` (the console script of this interpreter)."""
    beside = Path(sys.executable).parent / "enrichctl"
    if beside.is_file():
        return str(beside.absolute())
    found = shutil.which("enrichctl")
    return str(Path(found).absolute()) if found else str(Path(sys.argv[0]).absolute())


def units_render_to(
    settings: Settings, *, user: bool, output: Path | None = None,
    config_path: Path | None = None, executable: str | None = None,
) -> list[Path]:
    """``enrichctl systemd render``: render for this installation and write into ``output``
    (default: the manager's unit directory). OSError when the directory is not writable."""
    units = render_units(
        settings, user=user, executable=executable or executable_default(),
        config_path=str(config_path) if config_path else None,
    )
    return write_units(output or units_dir_default(user), units)


class _UnitContext:
    """What every service unit of one rendering shares."""

    def __init__(self, settings: Settings, user: bool, exe: Path, config: Path | None) -> None:
        self.settings = settings
        self.user = user
        self.exe = exe
        self.config = config
        self.secrets = USER_SECRETS_DIR if user else SYSTEM_SECRETS_DIR

    def command(self, *args: str) -> str:
        """An ExecStart= line; a system unit reads the config file through a credential so
        neither ProtectHome= nor the file's mode keeps the service user from it."""
        words = [_exec_word(str(self.exe))]
        if self.config is not None:
            config = _exec_word(str(self.config)) if self.user else f"%d/{CONFIG_CREDENTIAL}"
            words += ["--config", config]
        return " ".join([*words, *args])

    def sandbox(self, *, credentials: Iterable[str], network: str) -> str:
        """The [Service] lines shared by every unit: state, credentials, hardening, network."""
        lines: list[str] = []
        if not self.user:
            lines += ["# The SQLite default lives here ($STATE_DIRECTORY): /var/lib/enrichctl.",
                      "StateDirectory=enrichctl", "StateDirectoryMode=0700"]
        else:
            lines += ["# No StateDirectory=: a user manager would put it under ~/.config; the database",
                      "# stays where an interactive `enrichctl` finds it ($XDG_DATA_HOME/enrichctl)."]
        creds = list(credentials)
        if self.config is not None and not self.user:
            creds.append(f"{CONFIG_CREDENTIAL}:{_unit_path(self.config)}")
        lines += [f"LoadCredential={c}" for c in creds]
        lines += (_USER_HARDENING if self.user else _SYSTEM_HARDENING).splitlines()
        if not self.user:
            lines += self._home_access()
            lines += self._database_access()
            lines += _network_lines(network)
        return "\n".join(lines)

    def _home_access(self) -> list[str]:
        """ProtectHome=; an interpreter or virtualenv under /home or /root is bound read-only."""
        needed = sorted({p for p in _install_roots(self.exe) if _under_home(p)})
        if not needed:
            return ["ProtectHome=yes"]
        return [
            "# The interpreter lives under a home directory: an empty /home and /root with only it.",
            "ProtectHome=tmpfs",
            "BindReadOnlyPaths=" + " ".join(_unit_path(p) for p in needed),
        ]

    def _database_access(self) -> list[str]:
        """ReadWritePaths= for a SQLite file configured outside the state directory."""
        from enrichctl.store.repo import sqlite_path  # the store (numpy, async drivers) only here

        path = sqlite_path(self.settings.database_url)  # None: the default path, another backend
        if path is None:
            return []
        path = path.absolute()
        return [
            "# database_url names a SQLite file outside /var/lib/enrichctl: it must be writable.",
            f"ReadWritePaths=-{_unit_path(path.parent)}",
        ]


    def textfile_access(self) -> str:
        """[metrics] textfile_path: under /run, a runtime directory the transient user owns,
        readable by node_exporter and kept between runs; elsewhere, ReadWritePaths=. Each
        line after a newline, so nothing is added when no textfile is configured."""
        path = self.settings.metrics.textfile_path
        if path is None or self.user:
            return ""
        directory = Path(os.path.normpath(path.absolute().parent))
        if directory.parent == Path("/run"):
            return "\n" + "\n".join([
                "# [metrics] textfile_path: written for node_exporter's textfile collector.",
                f"RuntimeDirectory={_unit_path(Path(directory.name))}", "RuntimeDirectoryMode=0755",
                "RuntimeDirectoryPreserve=yes"])
        return "\n" + "\n".join([
            "# [metrics] textfile_path: this directory must be writable by the transient user",
            "# (a directory under /run, such as /run/enrichctl-metrics, is created for it).",
            f"ReadWritePaths=-{_unit_path(directory)}"])


def _timer(settings: Settings) -> str:
    schedule = settings.schedule
    return f"""\
# Rendered by `enrichctl systemd render`; render again after changing [schedule].
[Unit]
Description=enrichctl: daily market-data refresh

[Timer]
OnCalendar={schedule.on_calendar}
# One catch-up run when the machine was off at the scheduled time.
Persistent=true
# Spread hosts over a window; FixedRandomDelay= keeps each host's offset the same every day.
RandomizedDelaySec={schedule.randomized_delay_seconds}
FixedRandomDelay=true
AccuracySec=1min
Unit={RUN_SERVICE}

[Install]
WantedBy=timers.target
"""


def _run_service(ctx: _UnitContext) -> str:
    network = "internet" if _needs_internet(ctx.settings) else "none"
    key = [f"{c}:{ctx.secrets}/{c}" for c in provider_entry(ctx.settings.provider).unit.credentials]
    return f"""\
# Rendered by `enrichctl systemd render`. Started by {RUN_TIMER}; `systemctl start {RUN_SERVICE}`
# runs it now. Logs: journalctl -u enrichctl
[Unit]
Description=enrichctl: bring every configured series up to date
Wants=network-online.target
After=network-online.target
# Exit 1 (some symbols failed), 75 (another run active, provider unreachable), 78 (configuration)
# and a start timeout all fail the unit and start the hook.
OnFailure=enrichctl-failure@%n.service

[Service]
Type=oneshot
ExecStart={ctx.command("run", "--trigger", "timer")}
TimeoutStartSec={RUN_START_TIMEOUT}
# SIGTERM: stop taking jobs, cancel in-flight work, commit what is complete, mark the run cancelled.
KillSignal=SIGTERM
TimeoutStopSec={RUN_STOP_TIMEOUT}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
{ctx.sandbox(credentials=key, network=network)}{ctx.textfile_access()}
"""


def _serve_service(ctx: _UnitContext) -> str:
    serve = ctx.settings.serve
    loopback = host_is_loopback(serve.host)
    network = "internet" if _needs_internet(ctx.settings) or not loopback else "loopback"
    target = "default.target" if ctx.user else "multi-user.target"
    return f"""\
# Rendered by `enrichctl systemd render`: the dashboard and API on {serve.host}:{serve.port}.
[Unit]
Description=enrichctl: dashboard and API (enrichctl serve)
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
ExecStart={ctx.command("serve")}
Restart=on-failure
RestartSec=5s
# 78: a configuration error; restarting cannot fix it.
RestartPreventExitStatus=78
KillSignal=SIGTERM
TimeoutStopSec={SERVE_STOP_TIMEOUT}
# Room for serve.max_connections (default 1024) and more; serve lowers its cap to fit the limit.
LimitNOFILE=8192
{ctx.sandbox(credentials=[f"serve_token:{ctx.secrets}/serve_token"], network=network)}

[Install]
WantedBy={target}
"""


def _failure_service(ctx: _UnitContext) -> str:
    return f"""\
# Rendered by `enrichctl systemd render`: started when %i fails (OnFailure= of {RUN_SERVICE}).
# It writes the reasons (`enrichctl status --check`) to this unit's journal. To be alerted, add
# your own command (`+`: outside this sandbox): `systemctl edit enrichctl-failure@.service`, then
#   [Service]
#   ExecStartPost=+/usr/local/bin/notify-admin "enrichctl: %i failed"
[Unit]
Description=enrichctl: report the failure of %i

[Service]
Type=oneshot
ExecStart={ctx.command("status", "--check")}
# 3: unhealthy, which is what this hook is expected to find.
SuccessExitStatus=3
{ctx.sandbox(credentials=[], network="none" if not _needs_remote_database(ctx.settings) else "internet")}
"""


def _network_lines(network: str) -> list[str]:
    if network == "internet":
        return ["# The provider and the database may be anywhere: allow-listing IPs is a firewall's job."]
    if network == "loopback":
        return ["IPAddressDeny=any", "IPAddressAllow=localhost"]
    return ["# Talks to no host (SQLite and no remote provider): no IP traffic at all.", "IPAddressDeny=any"]


def _needs_internet(settings: Settings) -> bool:
    return provider_entry(settings.provider).unit.internet or _needs_remote_database(settings)


def _needs_remote_database(settings: Settings) -> bool:
    url = settings.database_url
    return url is not None and not url.startswith("sqlite")


def _install_roots(exe: Path) -> set[Path]:
    """Directories the service must read to start ``exe``: its prefix (a virtualenv) and that of
    the interpreter named on its ``#!`` line, through symlinks."""
    roots = {exe.parent.parent}
    interpreter = _shebang_interpreter(exe)
    if interpreter is not None:
        roots |= {interpreter.parent.parent, interpreter.resolve().parent.parent}
    return {p.absolute() for p in roots}


def _shebang_interpreter(exe: Path) -> Path | None:
    """The absolute interpreter of a ``#!`` script (not ``/usr/bin/env``), or None."""
    try:
        with exe.open("rb") as script:
            first = script.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words or not words[0].startswith("/") or Path(words[0]).name == "env":
        return None
    return Path(words[0])


def _under_home(path: Path) -> bool:
    return any(path == root or root in path.parents for root in _HOME_ROOTS)


def _unit_path(path: Path) -> str:
    """A path as a unit-file value: specifiers (%) escaped; spaces refused."""
    text = str(path)
    if any(c.isspace() for c in text):
        raise ValueError(f"systemd units cannot name a path with whitespace here: {text!r}")
    return text.replace("%", "%%")


def _exec_word(word: str) -> str:
    """One ExecStart= argument, quoted when needed, with % and $ escaped. No unit value may hold
    a line break: quoting does not stop it from starting a new directive."""
    if any(ord(c) < 32 or ord(c) == 127 for c in word):
        raise ValueError(f"systemd units cannot name a path with a control character: {word!r}")
    escaped = word.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\;]', escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped
