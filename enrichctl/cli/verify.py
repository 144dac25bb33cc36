"""``enrichctl verify``: re-check the stored series, optionally against the provider."""

from __future__ import annotations

from typing import Annotated

import typer

from enrichctl.cli import render
from enrichctl.cli.parse import (
    parse_symbol_argument,
)
from enrichctl.cli.shell import JSON_HELP, print_json, run_sync, settings_read
from enrichctl.errors import EXIT_FAILED


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
    one = parse_symbol_argument(symbol) if symbol is not None else None
    settings = settings_read()
    from enrichctl import verify as verifying

    options = verifying.VerifyOptions(recompute, against_provider, sample, seed)
    doc = run_sync(verifying.verify(settings, one, options))
    print_json(doc) if as_json else render.verify(render.shown(doc))
    if not doc["ok"]:
        raise typer.Exit(EXIT_FAILED)

