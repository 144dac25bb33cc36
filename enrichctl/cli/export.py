"""``enrichctl export``: the stored bars of one series as CSV, JSON lines or Parquet, or every series as
a Parquet dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enrichctl.cli.parse import (
    parse_date,
    parse_symbol_argument,
    parse_timeframes,
)
from enrichctl.cli.shell import run_sync, settings_read
from enrichctl.domain import Timeframe


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
    tf = parse_timeframes(timeframe or ("1d" if not every else None), "--timeframe")
    if tf is not None and len(tf) != 1:
        raise typer.BadParameter("expected exactly one timeframe", param_hint="--timeframe")
    start, end = parse_date(since, "--since"), parse_date(until, "--until")
    if end is not None:
        end += 86_400_000 - 1  # the whole --until day
    if start is not None and end is not None and start > end:
        raise typer.BadParameter("--since is after --until", param_hint="--since")
    settings = settings_read()
    if fmt == "parquet":
        from enrichctl import exports_parquet as parquet

        assert output is not None
        request = parquet.ParquetRequest(start, end, indicators, tf[0] if tf else None)
        if every:
            typer.echo(parquet.export_dataset(settings, output, request).line(output), err=True)
        else:
            count = parquet.export_file(settings, parse_symbol_argument(symbol or ""), tf[0] if tf else Timeframe.D1, request, output)
            typer.echo(f"wrote {count} bars to {output}", err=True)
        return
    from enrichctl import exports

    request = exports.ExportRequest(parse_symbol_argument(symbol or ""), tf[0] if tf else Timeframe.D1, start, end, indicators, fmt)
    count = run_sync(exports.export(settings, request, output))
    if output is not None:
        typer.echo(f"wrote {count} bars to {output}", err=True)

