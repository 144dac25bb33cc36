"""``enrichctl run``: bring the selected series up to date, or re-run the failed jobs of the last
run."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import click
import typer

from enrichctl.cli import render
from enrichctl.cli.parse import (
    parse_instant,
    parse_range,
    parse_symbols,
    parse_timeframes,
)
from enrichctl.cli.shell import print_json, run_sync, service_module, settings_read, with_session
from enrichctl.cli.stdout import fail
from enrichctl.domain import AssetClass, Timeframe, Trigger
from enrichctl.providers.registry import provider_names
from enrichctl.settings import Settings


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
    start, end = parse_range(since, until, parse_instant(as_of))
    chosen, chosen_timeframes = parse_symbols(symbols), parse_timeframes(timeframes)
    if rerun_failed:
        if chosen is not None:
            raise typer.BadParameter("--rerun-failed picks the symbols itself", param_hint="--symbols")
        chosen, chosen_timeframes = _rerun_selection(settings_read(provider=provider), chosen_timeframes, as_json)
    parsed: dict[str, Any] = {
        "symbols": chosen, "asset_class": asset_class, "timeframes": chosen_timeframes,
        "since": start, "until": end, "full_refresh": full_refresh, "dry_run": dry_run,
        "force": force, "trigger": trigger, "as_of": parse_instant(as_of), "worker": worker,
    }
    settings = settings_read(provider=provider)
    svc = service_module()
    options = svc.RunOptions(**parsed)
    show_progress = not as_json and sys.stderr.isatty()
    try:
        with render.RunProgress(enabled=show_progress) as progress:
            report = run_sync(svc.run(settings, options, progress.hook))
    finally:
        if not dry_run and not worker:
            _metrics_textfile(settings)
    if as_json:
        print_json(report.doc())
        if report.aborted and report.error:  # stdout is the document; the cause still goes to stderr
            fail(report.error, svc.exit_code_of(report))
    else:
        render.run_report(render.shown(report.doc()))
    raise typer.Exit(svc.exit_code_of(report))


def _rerun_selection(
    settings: Settings, timeframes: tuple[Timeframe, ...] | None, as_json: bool
) -> tuple[list[str], tuple[Timeframe, ...] | None]:
    """The failed symbols of the last run that worked, with its timeframes unless given; exit 0
    at once when none failed."""
    last = run_sync(with_session(settings, lambda s: s.failed_of_last_run()))
    if not last["symbols"]:
        message = f"nothing to re-run: no job of run {last['run_id']} failed"
        print_json({"rerun_of": last["run_id"], "symbols": [], "message": message}) if as_json else typer.echo(message)
        raise typer.Exit(0)
    if timeframes is None and last["timeframes"]:
        timeframes = parse_timeframes(",".join(last["timeframes"]))
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
        run_sync(textfile.textfile_write(settings))
    except EnrichError as exc:
        typer.echo(f"warning: {exc.message}", err=True)

