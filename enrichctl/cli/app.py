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
import os
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import click
import typer

from enrichctl.cli import admin, export, render, run, series, status, verify
from enrichctl.cli.shell import STATE
from enrichctl.cli.stdout import GuardedStdout, PipeClosed, StdoutFailed, fail, pipe_closed, stdout_discard
from enrichctl.errors import EXIT_FAILED, EXIT_USAGE, EnrichError
from enrichctl.logs import logging_setup

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


# The commands, in the order --help lists them.
app.command()(run.run)
app.command()(status.status)
app.command()(status.history)
app.command()(status.metrics)
app.command()(status.pause)
app.command()(status.resume)
app.command()(export.export)
app.command()(verify.verify)
app.command()(admin.serve)
systemd_app.command("render")(admin.systemd_render)
config_app.command("show")(admin.config_show)
config_app.command("check")(admin.config_check)
db_app.command("upgrade")(admin.db_upgrade)
app.add_typer(series.series_app, name="series")


class _HelpFormatter(click.HelpFormatter):
    """Typer escapes "[default: ...]" for rich markup even with rich off, so help would show a
    literal backslash; undo that escape."""

    def write_dl(self, rows, *args, **kwargs) -> None:
        super().write_dl([(term, text.replace("\\[", "[")) for term, text in rows], *args, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and the documented exit code for every failure."""
    click.Context.formatter_class = _HelpFormatter
    command = typer.main.get_command(app)
    if not isinstance(sys.stdout, GuardedStdout):
        sys.stdout = GuardedStdout(sys.stdout)  # type: ignore[assignment]
    try:
        code = command.main(args=argv, prog_name="enrichctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        hint = f" (see 'enrichctl {exc.ctx.command_path.partition(' ')[2]} --help')".replace("  ", " ") if exc.ctx else ""
        fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
    except click.Abort:
        fail("aborted", 130)
    except EnrichError as exc:
        fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except asyncio.CancelledError:
        fail("stopped by a signal; completed work was committed", 143)
    except PipeClosed:
        code = pipe_closed()
    except StdoutFailed as exc:
        stdout_discard()
        fail(f"cannot write stdout: {exc.reason}", EXIT_FAILED)
    except Exception as exc:  # the last resort: a bug must still not print a traceback
        if os.environ.get("ENRICHCTL_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set ENRICHCTL_DEBUG=1 for a traceback)", EXIT_FAILED)
    try:  # a full disk shows here for a short document, not in the interpreter's own exit
        sys.stdout.flush()
    except PipeClosed:
        code = pipe_closed()
    except StdoutFailed as exc:
        stdout_discard()
        fail(f"cannot write stdout: {exc.reason}", EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)
