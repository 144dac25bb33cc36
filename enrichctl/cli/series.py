"""``enrichctl series list|remove``: what is stored, and removing a series. Thin shells over
``service.Session.series_inventory`` / ``series_remove``, like the other commands in ``cli``."""

from __future__ import annotations

from typing import Annotated

import typer

from enrichctl.cli import render
from enrichctl.cli.parse import parse_instant, parse_symbol_argument, parse_timeframes
from enrichctl.cli.shell import JSON_HELP, print_json, run_sync, settings_read, with_session

series_app = typer.Typer(help="What is stored: list series, remove one.", no_args_is_help=True)


@series_app.command("list")
def series_list(
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", hidden=True, help="Judge staleness as at this UTC instant.")] = None,
) -> None:
    """Every stored series: first and last bar, bars, provider, quality, stale."""
    now = parse_instant(as_of)
    doc = run_sync(with_session(settings_read(), lambda s: s.series_inventory(now)))
    print_json(doc) if as_json else render.series_inventory(render.shown(doc))


@series_app.command("remove")
def series_remove(
    symbol: Annotated[str, typer.Argument(help="The symbol whose stored data to remove.")],
    timeframe: Annotated[str | None, typer.Option("--timeframe", "-t", help="Only this timeframe (default: every one).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really remove (without it: say what would go).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Remove a series' bars, indicators, quality issues and records."""
    from enrichctl.errors import UsageError

    one = parse_symbol_argument(symbol)
    tf = parse_timeframes(timeframe, "--timeframe") if timeframe is not None else None
    if tf is not None and len(tf) != 1:
        raise typer.BadParameter("expected exactly one timeframe", param_hint="--timeframe")
    tf_value = tf[0].value if tf else None
    doc = run_sync(with_session(settings_read(), lambda s: s.series_remove(one, tf_value, yes)))
    if as_json:
        print_json(doc)
    elif doc["removed"]:
        typer.echo(f"removed {one} ({', '.join(doc['timeframes'])}): {doc['bars']} bars with their "
                   "indicators, quality issues and records")
    if doc["still_configured"]:
        render.notice(f"note: {one} is still in the configured universe; the next run fetches it "
                      "again unless you remove it from the config", "series_still_configured", symbol=one)
    if not doc["removed"]:
        raise UsageError(f"would remove {one} ({', '.join(doc['timeframes'])}): {doc['bars']} bars; "
                         "pass --yes to remove them")
