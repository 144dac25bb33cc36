"""The command line: parse, call one ``service`` function, render. No SQL, no HTTP here.

Errors become one line on stderr and the documented exit code (see ``errors.py``):
0 done, 1 some symbols failed, 2 usage, 3 unhealthy (``status --check``), 75 try later,
78 configuration.

``service`` (and with it SQLAlchemy, TA-Lib, exchange-calendars) is imported inside the commands,
after every argument is parsed: ``--help``, ``--version`` and bad input answer in a fraction of
the start-up time of a real command.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer

from enrichctl import render
from enrichctl.domain import (
    AssetClass,
    Timeframe,
    Trigger,
    parse_symbol,
    parse_timeframe,
)
from enrichctl.errors import EXIT_FAILED, EXIT_UNHEALTHY, EXIT_USAGE, EnrichError
from enrichctl.logs import logging_setup
from enrichctl.settings import Settings, settings_load, settings_redacted

if TYPE_CHECKING:
    from enrichctl import service

T = TypeVar("T")

app = typer.Typer(
    name="enrichctl",
    help="Keep a market-data database fresh and trustworthy.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
)
config_app = typer.Typer(help="Show or check the settings.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
systemd_app = typer.Typer(help="systemd units for unattended runs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(systemd_app, name="systemd")


class State:
    config: Path | None = None
    database_url: str | None = None


STATE = State()


# --- parsing helpers (each raises a one-line usage error naming the option) ------------------


def _symbols(value: str | None, hint: str = "--symbols") -> list[str] | None:
    if value is None:
        return None
    try:
        symbols = [parse_symbol(s) for s in value.split(",") if s.strip()]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    if not symbols:
        raise typer.BadParameter("no symbol given", param_hint=hint)
    return symbols


def _timeframes(value: str | None, hint: str = "--timeframes") -> tuple[Timeframe, ...] | None:
    if value is None:
        return None
    try:
        chosen = tuple(dict.fromkeys(parse_timeframe(t) for t in value.split(",") if t.strip()))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    if not chosen:
        raise typer.BadParameter("no timeframe given", param_hint=hint)
    return chosen


def _date(value: str | None, hint: str) -> int | None:
    if value is None:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise typer.BadParameter(f"invalid date {value!r}: expected YYYY-MM-DD", param_hint=hint) from None
    return int(day.timestamp() * 1000)


def _instant(value: str | None, hint: str = "--as-of") -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.removesuffix("Z"))
    except ValueError:
        raise typer.BadParameter(
            f"invalid instant {value!r}: expected YYYY-MM-DDTHH:MM", param_hint=hint
        ) from None
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


def _one_symbol(value: str) -> str:
    try:
        return parse_symbol(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SYMBOL") from None


def _service() -> ModuleType:
    """The use cases, imported once the arguments are known to be good (see the module doc)."""
    from enrichctl import service

    return service


def _settings(**overrides: Any) -> Settings:
    if STATE.database_url is not None:
        overrides.setdefault("database_url", STATE.database_url)
    return settings_load(STATE.config, **overrides)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run the one coroutine of this command; SIGTERM cancels it like Ctrl-C does."""

    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    return asyncio.run(main())


async def _with_session(settings: Settings, use: Callable[[service.Session], Awaitable[T]]) -> T:
    async with _service().session_open(settings) as session:
        return await use(session)


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")


# --- the app ---------------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"enrichctl {package_version('enrichctl')}")
        raise typer.Exit()


@app.callback()
def _main(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="Overrides database_url.")] = None,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json.")] = "text",
    log_level: Annotated[str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("expected text or json", param_hint="--log-format")
    if log_level is not None and log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("expected DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    logging_setup(log_format, log_level)
    STATE.config = config
    STATE.database_url = database_url


@app.command()
def run(
    symbols: Annotated[str | None, typer.Option("--symbols", "-s", help="Comma-separated tickers (default: the configured universe).")] = None,
    asset_class: Annotated[AssetClass | None, typer.Option("--asset-class", help="Only this asset class.")] = None,
    timeframes: Annotated[str | None, typer.Option("--timeframes", "-t", help="Comma-separated, e.g. 1d,1h.")] = None,
    provider: Annotated[str | None, typer.Option("--provider", click_type=click.Choice(["polygon", "demo"]), help="polygon or demo (synthetic, offline).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="History start YYYY-MM-DD for new or refreshed series.")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Refetch and replace whole series.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run even when paused.")] = False,
    trigger: Annotated[Trigger, typer.Option("--trigger", help="Who started the run.")] = Trigger.CLI,
    worker: Annotated[bool, typer.Option("--worker", help="Only join the active run as another worker (PostgreSQL); never start one.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", hidden=True, help="Pretend it is this UTC instant (YYYY-MM-DDTHH:MM).")] = None,
) -> None:
    """Bring every selected series up to date."""
    parsed: dict[str, Any] = {
        "symbols": _symbols(symbols), "asset_class": asset_class, "timeframes": _timeframes(timeframes),
        "since": _date(since, "--since"), "full_refresh": full_refresh, "dry_run": dry_run,
        "force": force, "trigger": trigger, "as_of": _instant(as_of), "worker": worker,
    }
    settings = _settings(provider=provider)
    svc = _service()
    options = svc.RunOptions(**parsed)
    show_progress = not as_json and sys.stderr.isatty()
    with render.RunProgress(enabled=show_progress) as progress:
        report = _run(svc.run(settings, options, progress.hook))
    if as_json:
        _print_json(report.doc())
    else:
        render.run_report(report.doc())
    raise typer.Exit(svc.exit_code_of(report))


@app.command()
def status(
    symbol: Annotated[str | None, typer.Argument(help="One symbol: its series and recent jobs.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 3 when anything failed or is stale.")] = False,
) -> None:
    """Where every symbol stands."""
    one = _one_symbol(symbol) if symbol is not None else None
    settings = _settings()
    svc = _service()
    if one is not None:
        doc = _run(_with_session(settings, lambda s: s.job_status(one)))
        _print_json(doc) if as_json else render.job_status(doc)
        health = svc.health_of_symbol(doc)
    else:
        doc = _run(_with_session(settings, lambda s: s.overview()))
        _print_json(doc) if as_json else render.overview(doc)
        health = svc.health(doc)
    if check:
        if not as_json:
            render.health(health)
        if health["status"] == "unhealthy":
            raise typer.Exit(EXIT_UNHEALTHY)


@app.command()
def history(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="How many runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent runs."""
    doc = _run(_with_session(_settings(), lambda s: s.history(limit)))
    _print_json(doc) if as_json else render.history(doc)


@app.command()
def metrics(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Fetch, compute and data-quality metrics of the last 24 hours."""
    doc = _run(_with_session(_settings(), lambda s: s.metrics()))
    _print_json(doc) if as_json else render.metrics(doc)


@app.command()
def pause(
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown in status).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Pause timer runs (they record a skipped run) until resume."""
    doc = _run(_with_session(_settings(), lambda s: s.pause(reason)))
    _print_json(doc) if as_json else typer.echo(f"paused since {doc['since']}" + (f": {reason}" if reason else ""))


@app.command()
def resume(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Resume timer runs."""
    doc = _run(_with_session(_settings(), lambda s: s.resume()))
    _print_json(doc) if as_json else typer.echo("resumed" if doc["was_paused"] else "was not paused")


@app.command()
def export(
    symbol: Annotated[str, typer.Argument(help="The symbol to export.")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t")] = "1d",
    since: Annotated[str | None, typer.Option("--since", help="From YYYY-MM-DD (inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="To YYYY-MM-DD (inclusive).")] = None,
    indicators: Annotated[bool, typer.Option("--indicators", help="Add the indicator columns.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or jsonl.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default: stdout).")] = None,
) -> None:
    """The stored bars of one series, ordered by time."""
    if fmt not in ("csv", "jsonl"):
        raise typer.BadParameter("expected csv or jsonl", param_hint="--format")
    one = _one_symbol(symbol)
    tf = _timeframes(timeframe, "--timeframe")
    if tf is None or len(tf) != 1:
        raise typer.BadParameter("expected exactly one timeframe", param_hint="--timeframe")
    start, end = _date(since, "--since"), _date(until, "--until")
    if end is not None:
        end += 86_400_000 - 1  # the whole --until day
    if start is not None and end is not None and start > end:
        raise typer.BadParameter("--since is after --until", param_hint="--since")
    settings = _settings()
    from enrichctl import exports

    request = exports.ExportRequest(one, tf[0], start, end, indicators, fmt)
    count = _run(exports.export(settings, request, output))
    if output is not None:
        typer.echo(f"wrote {count} bars to {output}", err=True)


@app.command()
def verify(
    symbol: Annotated[str | None, typer.Argument(help="Only this symbol.")] = None,
    recompute: Annotated[bool, typer.Option("--recompute", help="Recompute every indicator and compare.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-check stored series (gaps, OHLC, duplicates); exit 1 when anything is off."""
    one = _one_symbol(symbol) if symbol is not None else None
    settings = _settings()
    from enrichctl import exports

    doc = _run(exports.verify(settings, one, recompute))
    _print_json(doc) if as_json else render.verify(doc)
    if not doc["ok"]:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default serve.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port (default serve.port, 8000).")] = None,
) -> None:
    """Serve the dashboard documents, Prometheus metrics and a web page over HTTP."""
    from enrichctl import web

    settings = _settings()
    try:
        _run(web.serve_main(settings, host, port))
    except asyncio.CancelledError:  # SIGTERM: a clean stop
        raise typer.Exit(0) from None


@systemd_app.command("render")
def systemd_render(
    user: Annotated[bool | None, typer.Option("--user/--system", help="User units (default when not root) or system units.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Directory (default: the manager's unit directory).")] = None,
) -> None:
    """Write enrichctl.timer, enrichctl.service and enrichctl-serve.service for this install."""
    from enrichctl import systemd
    from enrichctl.errors import ConfigError
    from enrichctl.settings import config_path_find

    settings = _settings()
    as_user = (os.geteuid() != 0) if user is None else user
    config = config_path_find(STATE.config)
    try:
        written = systemd.units_render_to(
            settings, user=as_user, output=output,
            config_path=config.absolute() if config else None,
        )
    except PermissionError as exc:
        raise ConfigError(f"cannot write {exc.filename}: permission denied; run with sudo, or use --user") from None
    except OSError as exc:
        raise ConfigError(f"cannot write the units: {exc.strerror}") from None
    for path in written:
        typer.echo(str(path))
    if STATE.database_url or os.environ.get("ENRICHCTL_DATABASE_URL") or os.environ.get("DATABASE_URL"):
        typer.echo("note: the units read the config file only; put database_url there", err=True)
    manager = "systemctl --user" if as_user else "systemctl"
    typer.echo(f"next: {manager} daemon-reload && {manager} enable --now enrichctl.timer", err=True)


@config_app.command("show")
def config_show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The effective settings, secrets redacted."""
    doc = settings_redacted(_settings())
    _print_json(doc) if as_json else render.config(doc)


@config_app.command("check")
def config_check() -> None:
    """Validate the settings; exit 78 with the reason when they are wrong."""
    from enrichctl.errors import ConfigError
    from enrichctl.providers.base import provider_check
    from enrichctl.systemd import calendar_check

    settings = _settings()
    provider_check(settings)
    if (problem := calendar_check(settings.schedule.on_calendar)) is not None:
        raise ConfigError(f"schedule.on_calendar {settings.schedule.on_calendar!r}: {problem}")
    typer.echo(f"ok: provider {settings.provider}, {len(settings.universe)} symbols, "
               f"timeframes {','.join(t.value for t in settings.timeframes)}, "
               f"database {settings_redacted(settings)['database_url']}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (they also apply automatically)."""
    doc = _run(_service().db_upgrade(_settings()))
    typer.echo(f"schema at revision {doc['revision']} (head {doc['head']})")


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and the documented exit code for every failure."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="enrichctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        hint = f" (see 'enrichctl {exc.ctx.command_path.partition(' ')[2]} --help')".replace("  ", " ") if exc.ctx else ""
        _fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
    except click.Abort:
        _fail("aborted", 130)
    except EnrichError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except asyncio.CancelledError:
        _fail("stopped by a signal; completed work was committed", 143)
    except BrokenPipeError:
        sys.stderr.close()
        code = 0
    except Exception as exc:  # the last resort: a bug must still not print a traceback
        if os.environ.get("ENRICHCTL_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set ENRICHCTL_DEBUG=1 for a traceback)", EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"enrichctl: error: {message}\n")
    sys.exit(code)
