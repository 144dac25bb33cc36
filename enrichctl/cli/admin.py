"""``serve``, ``systemd render``, ``config show|check``, ``db upgrade``: running and setting up
enrichctl."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from enrichctl.cli import render
from enrichctl.cli.parse import (
    parse_instant,
)
from enrichctl.cli.shell import JSON_HELP, STATE, print_json, run_sync, service_module, settings_read
from enrichctl.settings import settings_redacted


def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default serve.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port (default serve.port, 8000).")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", hidden=True, help="Judge staleness as at this UTC instant.")] = None,
) -> None:
    """Serve the dashboard documents, Prometheus metrics and a web page over HTTP."""
    from enrichctl.web import server as web

    now = parse_instant(as_of)
    settings = settings_read()
    try:
        run_sync(web.serve_main(settings, host, port, now=now))
    except asyncio.CancelledError:  # SIGTERM: a clean stop
        raise typer.Exit(0) from None


def systemd_render(
    user: Annotated[bool | None, typer.Option("--user/--system", help="User units (default when not root) or system units.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Directory (default: the manager's unit directory).")] = None,
) -> None:
    """Write enrichctl.timer, enrichctl.service and enrichctl-serve.service for this install."""
    from enrichctl import systemd
    from enrichctl.errors import ConfigError
    from enrichctl.settings import config_path_find

    settings = settings_read()
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


def config_show(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """The effective settings, secrets redacted, and the file they were read from."""
    from enrichctl.settings import config_candidates, config_path_find

    doc = settings_redacted(settings_read())
    source = config_path_find(STATE.config)
    if as_json:
        print_json({"source": str(source.absolute()) if source else None, **doc})
        return
    if source is not None:
        typer.echo(f"# read from {source.absolute()} (environment variables and flags override it)")
    else:
        looked = ", ".join(str(p) for p in config_candidates())
        typer.echo(f"# no config file found (looked for {looked}): defaults and environment variables")
    render.config(render.shown(doc))


def config_check() -> None:
    """Validate the settings; exit 78 with the reason when they are wrong."""
    from enrichctl.errors import ConfigError
    from enrichctl.oncalendar import calendar_check
    from enrichctl.providers.registry import provider_check

    settings = settings_read()
    provider_check(settings)
    if (problem := calendar_check(settings.schedule.on_calendar)) is not None:
        raise ConfigError(f"schedule.on_calendar {settings.schedule.on_calendar!r}: {problem}")
    typer.echo(f"ok: provider {settings.provider}, {len(settings.universe)} symbols, "
               f"timeframes {','.join(t.value for t in settings.timeframes)}, "
               f"database {settings_redacted(settings)['database_url']}")


def db_upgrade() -> None:
    """Apply the database migrations (they also apply automatically)."""
    doc = run_sync(service_module().db_upgrade(settings_read()))
    typer.echo(f"schema at revision {doc['revision']} (head {doc['head']})")
