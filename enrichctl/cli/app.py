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
import logging
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

from enrichctl.cli import render
from enrichctl.domain import (
    EARLIEST_MS,
    AssetClass,
    RunStatus,
    Timeframe,
    Trigger,
    parse_symbol,
    parse_timeframe,
    printable,
)
from enrichctl.errors import EXIT_FAILED, EXIT_UNHEALTHY, EXIT_USAGE, EnrichError
from enrichctl.logs import log_event, logging_setup
from enrichctl.providers.registry import provider_names
from enrichctl.settings import Settings, settings_load, settings_redacted

if TYPE_CHECKING:
    from enrichctl import service

T = TypeVar("T")
EARLIEST_DAY = "1970-01-01"  # domain.EARLIEST_MS as a --since date
JSON_HELP = "Print the document as JSON (stable keys) instead of a table."

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
    log_json: bool = False  # --log-format json: errors and notices are JSON lines too
    env_warned: bool = False  # unknown ENRICHCTL_* variables are named once per process


STATE = State()


# --- parsing helpers (each raises a one-line usage error naming the option) ------------------


def _symbols(value: str | None, hint: str = "--symbols") -> list[str] | None:
    if value is None:
        return None
    try:
        symbols = [parse_symbol(s.strip()) for s in value.split(",") if s.strip()]
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


def _range(since: str | None, until: str | None, as_of: int | None) -> tuple[int | None, int | None]:
    """--since and --until as epoch ms (--until: the end of its day). A start in the future, or
    after the end, is a usage error: it would silently fetch nothing."""
    start, end = _date(since, "--since"), _date(until, "--until")
    now = as_of if as_of is not None else int(datetime.now(UTC).timestamp() * 1000)
    if start is not None and start > now:
        raise typer.BadParameter(f"{since} is in the future", param_hint="--since")
    if end is not None and end < EARLIEST_MS:
        raise typer.BadParameter(f"{until} is before {EARLIEST_DAY}, where every provider's history "
                                 "has begun", param_hint="--until")
    if start is not None and start < EARLIEST_MS:
        # Before any data: from the start of what the provider has (no negative instant).
        render.notice(f"--since {since} is before {EARLIEST_DAY}: fetching from the start of the "
                      "provider's history", "since_clamped", style="", since=EARLIEST_DAY)
        start = EARLIEST_MS
    if end is not None:
        end += 86_400_000 - 1  # the whole --until day
        if start is not None and start > end:
            raise typer.BadParameter(f"{since} is after --until {until}", param_hint="--since")
    return start, end


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
    _env_warn()
    return settings_load(STATE.config, **overrides)


def _env_warn() -> None:
    """Name each misspelt ``ENRICHCTL_*`` variable once, on stderr (stdout may be --json)."""
    if STATE.env_warned:
        return
    STATE.env_warned = True
    from enrichctl.settings import env_unknown

    for name, line in env_unknown():
        if STATE.log_json:
            log_event(logging.getLogger("enrichctl.settings"), logging.WARNING,
                      "unknown_environment_variable", variable=name, message=line)
        else:
            sys.stderr.write(f"enrichctl: warning: {printable(line)}\n")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run the one coroutine of this command; SIGTERM cancels it like Ctrl-C does."""

    result: list[T] = []

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        result.append(await coro)

    # The main task returns nothing: Python 3.11's asyncio.run formats the task's repr, result
    # included, when it restores the SIGINT handler, and a run's report is its whole plan
    # (0.1 s for 300 symbols).
    asyncio.run(main())
    return result[0]


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
    render.NOTICES_AS_LOG["enabled"] = STATE.log_json = log_format == "json"
    STATE.config = config
    STATE.database_url = database_url


@app.command()
def run(
    symbols: Annotated[str | None, typer.Option("--symbols", "-s", help="Comma-separated tickers (default: the configured universe).")] = None,
    asset_class: Annotated[AssetClass | None, typer.Option("--asset-class", help="Only this asset class.")] = None,
    timeframes: Annotated[str | None, typer.Option("--timeframes", "-t", help="Comma-separated, e.g. 1d,1h.")] = None,
    provider: Annotated[str | None, typer.Option("--provider", click_type=click.Choice(provider_names()), help="polygon or demo (synthetic, offline).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="History start YYYY-MM-DD: for new series, a backfill of older history, or with --full-refresh the refetch start.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Backfill only up to this day YYYY-MM-DD (inclusive); a later plain run continues to now.")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Refetch and replace whole series (from --since when given).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run even when paused.")] = False,
    trigger: Annotated[Trigger, typer.Option("--trigger", help="Who started the run.")] = Trigger.CLI,
    worker: Annotated[bool, typer.Option("--worker", help="Only join the active run as another worker (PostgreSQL); never start one.")] = False,
    rerun_failed: Annotated[bool, typer.Option("--rerun-failed", help="Only the symbols whose jobs failed in the last run (with its timeframes).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", hidden=True, help="Pretend it is this UTC instant (YYYY-MM-DDTHH:MM).")] = None,
) -> None:
    """Bring every selected series up to date."""
    start, end = _range(since, until, _instant(as_of))
    chosen, chosen_timeframes = _symbols(symbols), _timeframes(timeframes)
    if rerun_failed:
        if chosen is not None:
            raise typer.BadParameter("--rerun-failed picks the symbols itself", param_hint="--symbols")
        chosen, chosen_timeframes = _rerun_selection(_settings(provider=provider), chosen_timeframes, as_json)
    parsed: dict[str, Any] = {
        "symbols": chosen, "asset_class": asset_class, "timeframes": chosen_timeframes,
        "since": start, "until": end, "full_refresh": full_refresh, "dry_run": dry_run,
        "force": force, "trigger": trigger, "as_of": _instant(as_of), "worker": worker,
    }
    settings = _settings(provider=provider)
    svc = _service()
    options = svc.RunOptions(**parsed)
    show_progress = not as_json and sys.stderr.isatty()
    try:
        with render.RunProgress(enabled=show_progress) as progress:
            report = _run(svc.run(settings, options, progress.hook))
    finally:
        if not dry_run and not worker:
            _metrics_textfile(settings)
    if as_json:
        _print_json(report.doc())
        if report.aborted and report.error:  # stdout is the document; the cause still goes to stderr
            _fail(report.error, svc.exit_code_of(report))
    else:
        render.run_report(render.shown(report.doc()))
    raise typer.Exit(svc.exit_code_of(report))


def _rerun_selection(
    settings: Settings, timeframes: tuple[Timeframe, ...] | None, as_json: bool
) -> tuple[list[str], tuple[Timeframe, ...] | None]:
    """The failed symbols of the last run that worked, with its timeframes unless given; exit 0
    at once when none failed."""
    last = _run(_with_session(settings, lambda s: s.failed_of_last_run()))
    if not last["symbols"]:
        message = f"nothing to re-run: no job of run {last['run_id']} failed"
        _print_json({"rerun_of": last["run_id"], "symbols": [], "message": message}) if as_json else typer.echo(message)
        raise typer.Exit(0)
    if timeframes is None and last["timeframes"]:
        timeframes = _timeframes(",".join(last["timeframes"]))
    render.notice(f"re-running the {len(last['symbols'])} failed job(s) of run {last['run_id']}: "
                  f"{', '.join(last['symbols'])}", "rerun_failed", style="", run_id=last["run_id"])
    return last["symbols"], timeframes


def _metrics_textfile(settings: Settings) -> None:
    """[metrics] textfile_path: the run's outcome for node_exporter, also when the run failed.
    A file that cannot be written is a warning: the run's own exit code stands."""
    if settings.metrics.textfile_path is None:
        return
    from enrichctl import textfile
    from enrichctl.errors import EnrichError

    try:
        _run(textfile.textfile_write(settings))
    except EnrichError as exc:
        typer.echo(f"warning: {exc.message}", err=True)


@app.command()
def status(
    symbol: Annotated[str | None, typer.Argument(help="One symbol: its series and recent jobs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 3 when anything failed or is stale.")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", hidden=True, help="Judge staleness as at this UTC instant.")] = None,
) -> None:
    """Where every symbol stands."""
    one = _one_symbol(symbol) if symbol is not None else None
    now = _instant(as_of)
    settings = _settings()
    svc = _service()
    if one is not None:
        doc = _run(_with_session(settings, lambda s: s.job_status(one, now)))
        health = svc.health_of_symbol(doc)
    else:
        doc = _run(_with_session(settings, lambda s: s.overview(now)))
        health = svc.health(doc)
    if as_json:
        # With --check the document carries the verdict and every reason for it.
        _print_json({**doc, "health": health} if check else doc)
    else:
        render.job_status(render.shown(doc)) if one is not None else render.overview(render.shown(doc))
    if check:
        if not as_json:
            render.health(render.shown(health))
        if health["status"] == "unhealthy":
            raise typer.Exit(EXIT_UNHEALTHY)


@app.command()
def history(
    run_id: Annotated[int | None, typer.Argument(min=1, help="One run: its jobs, attempts, errors, requests and durations.")] = None,
    status: Annotated[RunStatus | None, typer.Option("--status", help="Only runs that ended so.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="How many runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Recent runs, or one run in detail."""
    if run_id is not None:
        if status is not None:
            raise typer.BadParameter("give a RUN_ID or --status, not both", param_hint="--status")
        doc = _run(_with_session(_settings(), lambda s: s.run_detail(run_id)))
        _print_json(doc) if as_json else render.run_detail(render.shown(doc))
        return
    chosen = status.value if status is not None else None
    doc = _run(_with_session(_settings(), lambda s: s.history(limit, chosen)))
    _print_json(doc) if as_json else render.history(render.shown(doc))


@app.command()
def metrics(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Fetch, compute and data-quality metrics of the last 24 hours."""
    doc = _run(_with_session(_settings(), lambda s: s.metrics()))
    _print_json(doc) if as_json else render.metrics(render.shown(doc))


@app.command()
def pause(
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown in status).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Pause timer runs (they record a skipped run) until resume."""
    doc = _run(_with_session(_settings(), lambda s: s.pause(reason)))
    _print_json(doc) if as_json else typer.echo(
        printable(f"paused since {doc['since']} by {doc['by']}" + (f": {doc['reason']}" if doc["reason"] else "")))


@app.command()
def resume(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Resume timer runs."""
    doc = _run(_with_session(_settings(), lambda s: s.resume()))
    _print_json(doc) if as_json else typer.echo("resumed" if doc["was_paused"] else "was not paused")


@app.command()
def export(
    symbol: Annotated[str | None, typer.Argument(help="The symbol to export.")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", "-t", help="Default 1d; with --all, every timeframe.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="From YYYY-MM-DD (inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="To YYYY-MM-DD (inclusive).")] = None,
    indicators: Annotated[bool, typer.Option("--indicators", help="Add the indicator columns.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, jsonl or parquet.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default: stdout); with --all, a directory.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every stored series as a hive-partitioned Parquet dataset in -o DIR.")] = False,
) -> None:
    """The stored bars of one series, ordered by time (or, with --all, of every series)."""
    if fmt not in ("csv", "jsonl", "parquet"):
        raise typer.BadParameter("expected csv, jsonl or parquet", param_hint="--format")
    if every == (symbol is not None):
        raise typer.BadParameter("give a SYMBOL or --all", param_hint="SYMBOL")
    if fmt == "parquet" and output is None:
        raise typer.BadParameter("Parquet is written to a file: add -o FILE (with --all, -o DIR)", param_hint="--output")
    if every and fmt != "parquet":
        raise typer.BadParameter("--all writes a Parquet dataset: add --format parquet", param_hint="--all")
    tf = _timeframes(timeframe or ("1d" if not every else None), "--timeframe")
    if tf is not None and len(tf) != 1:
        raise typer.BadParameter("expected exactly one timeframe", param_hint="--timeframe")
    start, end = _date(since, "--since"), _date(until, "--until")
    if end is not None:
        end += 86_400_000 - 1  # the whole --until day
    if start is not None and end is not None and start > end:
        raise typer.BadParameter("--since is after --until", param_hint="--since")
    settings = _settings()
    if fmt == "parquet":
        from enrichctl import exports_parquet as parquet

        assert output is not None
        request = parquet.ParquetRequest(start, end, indicators, tf[0] if tf else None)
        if every:
            typer.echo(parquet.export_dataset(settings, output, request).line(output), err=True)
        else:
            count = parquet.export_file(settings, _one_symbol(symbol or ""), tf[0] if tf else Timeframe.D1, request, output)
            typer.echo(f"wrote {count} bars to {output}", err=True)
        return
    from enrichctl import exports

    request = exports.ExportRequest(_one_symbol(symbol or ""), tf[0] if tf else Timeframe.D1, start, end, indicators, fmt)
    count = _run(exports.export(settings, request, output))
    if output is not None:
        typer.echo(f"wrote {count} bars to {output}", err=True)


@app.command()
def verify(
    symbol: Annotated[str | None, typer.Argument(help="Only this symbol.")] = None,
    recompute: Annotated[bool, typer.Option("--recompute", help="Recompute every indicator and compare.")] = False,
    against_provider: Annotated[bool, typer.Option(
        "--against-provider", help="Refetch the stored ranges from the provider and compare every field.")] = False,
    sample: Annotated[int | None, typer.Option(
        "--sample", min=1, help="With --against-provider: refetch only N ranges (one request each).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Which ranges --sample picks (same seed, same ranges).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Re-check stored series (gaps, OHLC, duplicates); exit 1 when anything is off."""
    if sample is not None and not against_provider:
        raise typer.BadParameter("only with --against-provider", param_hint="--sample")
    one = _one_symbol(symbol) if symbol is not None else None
    settings = _settings()
    from enrichctl import verify as verifying

    options = verifying.VerifyOptions(recompute, against_provider, sample, seed)
    doc = _run(verifying.verify(settings, one, options))
    _print_json(doc) if as_json else render.verify(render.shown(doc))
    if not doc["ok"]:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default serve.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port (default serve.port, 8000).")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", hidden=True, help="Judge staleness as at this UTC instant.")] = None,
) -> None:
    """Serve the dashboard documents, Prometheus metrics and a web page over HTTP."""
    from enrichctl.web import server as web

    now = _instant(as_of)
    settings = _settings()
    try:
        _run(web.serve_main(settings, host, port, now=now))
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
    except ValueError as exc:  # a path systemd cannot name (whitespace)
        raise ConfigError(str(exc)) from None
    for path in written:
        typer.echo(str(path))
    if STATE.database_url or os.environ.get("ENRICHCTL_DATABASE_URL") or os.environ.get("DATABASE_URL"):
        typer.echo("note: the units read the config file only; put database_url there", err=True)
    manager = "systemctl --user" if as_user else "systemctl"
    typer.echo(f"next: {manager} daemon-reload && {manager} enable --now enrichctl.timer", err=True)


@config_app.command("show")
def config_show(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """The effective settings, secrets redacted, and the file they were read from."""
    from enrichctl.settings import config_candidates, config_path_find

    doc = settings_redacted(_settings())
    source = config_path_find(STATE.config)
    if as_json:
        _print_json({"source": str(source.absolute()) if source else None, **doc})
        return
    if source is not None:
        typer.echo(f"# read from {source.absolute()} (environment variables and flags override it)")
    else:
        looked = ", ".join(str(p) for p in config_candidates())
        typer.echo(f"# no config file found (looked for {looked}): defaults and environment variables")
    render.config(render.shown(doc))


@config_app.command("check")
def config_check() -> None:
    """Validate the settings; exit 78 with the reason when they are wrong."""
    from enrichctl.errors import ConfigError
    from enrichctl.providers.registry import provider_check
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


# The inventory commands live in their own module (it imports the helpers above).
from enrichctl.cli.series import series_app  # noqa: E402

app.add_typer(series_app, name="series")


class _HelpFormatter(click.HelpFormatter):
    """Typer escapes "[default: ...]" for rich markup even with rich off, so help would show a
    literal backslash; undo that escape."""

    def write_dl(self, rows, *args, **kwargs) -> None:
        super().write_dl([(term, text.replace("\\[", "[")) for term, text in rows], *args, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and the documented exit code for every failure."""
    click.Context.formatter_class = _HelpFormatter
    command = typer.main.get_command(app)
    if not isinstance(sys.stdout, _GuardedStdout):
        sys.stdout = _GuardedStdout(sys.stdout)  # type: ignore[assignment]
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
    except _PipeClosed:
        code = _pipe_closed()
    except _StdoutFailed as exc:
        _stdout_discard()
        _fail(f"cannot write stdout: {exc.reason}", EXIT_FAILED)
    except Exception as exc:  # the last resort: a bug must still not print a traceback
        if os.environ.get("ENRICHCTL_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set ENRICHCTL_DEBUG=1 for a traceback)", EXIT_FAILED)
    try:  # a full disk shows here for a short document, not in the interpreter's own exit
        sys.stdout.flush()
    except _PipeClosed:
        code = _pipe_closed()
    except _StdoutFailed as exc:
        _stdout_discard()
        _fail(f"cannot write stdout: {exc.reason}", EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)


# The reader of stdout went away (`enrichctl export AAPL | head -1`): end quietly, with the status
# of a process killed by SIGPIPE (128 + 13), as `cat` would; a script sees the output was cut.
EXIT_PIPE_CLOSED = 141


class _PipeClosed(Exception):
    """stdout's reader closed the pipe. Not an OSError: click would turn that into a silent 1."""


class _StdoutFailed(Exception):
    """Writing stdout failed (a full disk, a quota, an I/O error)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(exc.strerror or str(exc))
        self.reason = exc.strerror or str(exc)


class _GuardedStdout:
    """sys.stdout, whose write errors say they came from stdout: an OSError from a database or
    a socket must not be mistaken for a closed pipe, nor one of stdout for an internal error."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except BrokenPipeError:
            raise _PipeClosed() from None
        except OSError as exc:
            raise _StdoutFailed(exc) from None

    def write(self, text: str) -> int:
        return self._guarded(lambda: self._stream.write(text))

    def writelines(self, lines: Any) -> None:
        self._guarded(lambda: self._stream.writelines(lines))

    def flush(self) -> None:
        self._guarded(self._stream.flush)


def _pipe_closed() -> int:
    _stdout_discard()
    return EXIT_PIPE_CLOSED


def _stdout_discard() -> None:
    """Point stdout at /dev/null: what is still buffered for a closed pipe or a full disk must
    not fail again (with a message) when the interpreter flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _fail(message: str, code: int) -> None:
    try:
        sys.stdout.flush()
    except (OSError, _PipeClosed, _StdoutFailed):
        _stdout_discard()
    if STATE.log_json:
        line = json.dumps({"ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
                           "level": "error", "event": "error", "message": message, "exit_code": code})
        sys.stderr.write(line + "\n")
    else:
        sys.stderr.write(f"enrichctl: error: {printable(message)}\n")
    sys.exit(code)
