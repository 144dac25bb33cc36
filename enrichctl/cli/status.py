"""``status``, ``history``, ``metrics``, ``pause``, ``resume``: one dashboard document each, as a table or
with ``--json`` as it is."""

from __future__ import annotations

from typing import Annotated

import typer

from enrichctl.cli import render
from enrichctl.cli.parse import (
    parse_instant,
    parse_symbol_argument,
)
from enrichctl.cli.shell import JSON_HELP, print_json, run_sync, service_module, settings_read, with_session
from enrichctl.domain import RunStatus, printable
from enrichctl.errors import EXIT_UNHEALTHY


def status(
    symbol: Annotated[str | None, typer.Argument(help="One symbol: its series and recent jobs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 3 when anything failed or is stale.")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", hidden=True, help="Judge staleness as at this UTC instant.")] = None,
) -> None:
    """Where every symbol stands."""
    one = parse_symbol_argument(symbol) if symbol is not None else None
    now = parse_instant(as_of)
    settings = settings_read()
    svc = service_module()
    if one is not None:
        doc = run_sync(with_session(settings, lambda s: s.job_status(one, now)))
        health = svc.health_of_symbol(doc)
    else:
        doc = run_sync(with_session(settings, lambda s: s.overview(now)))
        health = svc.health(doc)
    if as_json:
        # With --check the document carries the verdict and every reason for it.
        print_json({**doc, "health": health} if check else doc)
    else:
        render.job_status(render.shown(doc)) if one is not None else render.overview(render.shown(doc))
    if check:
        if not as_json:
            render.health(render.shown(health))
        if health["status"] == "unhealthy":
            raise typer.Exit(EXIT_UNHEALTHY)


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
        doc = run_sync(with_session(settings_read(), lambda s: s.run_detail(run_id)))
        print_json(doc) if as_json else render.run_detail(render.shown(doc))
        return
    chosen = status.value if status is not None else None
    doc = run_sync(with_session(settings_read(), lambda s: s.history(limit, chosen)))
    print_json(doc) if as_json else render.history(render.shown(doc))


def metrics(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Fetch, compute and data-quality metrics of the last 24 hours."""
    doc = run_sync(with_session(settings_read(), lambda s: s.metrics()))
    print_json(doc) if as_json else render.metrics(render.shown(doc))


def pause(
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown in status).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Pause timer runs (they record a skipped run) until resume."""
    doc = run_sync(with_session(settings_read(), lambda s: s.pause(reason)))
    print_json(doc) if as_json else typer.echo(
        printable(f"paused since {doc['since']} by {doc['by']}" + (f": {doc['reason']}" if doc["reason"] else "")))


def resume(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Resume timer runs."""
    doc = run_sync(with_session(settings_read(), lambda s: s.resume()))
    print_json(doc) if as_json else typer.echo("resumed" if doc["was_paused"] else "was not paused")

