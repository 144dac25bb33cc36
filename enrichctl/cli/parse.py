"""Parsing the options: each helper returns the value or raises a one-line usage error naming
the option."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from enrichctl.cli import render
from enrichctl.domain import EARLIEST_MS, Timeframe, parse_symbol, parse_timeframe

EARLIEST_DAY = "1970-01-01"  # domain.EARLIEST_MS as a --since date


def parse_symbols(value: str | None, hint: str = "--symbols") -> list[str] | None:
    if value is None:
        return None
    try:
        symbols = [parse_symbol(s.strip()) for s in value.split(",") if s.strip()]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    if not symbols:
        raise typer.BadParameter("no symbol given", param_hint=hint)
    return symbols


def parse_timeframes(value: str | None, hint: str = "--timeframes") -> tuple[Timeframe, ...] | None:
    if value is None:
        return None
    try:
        chosen = tuple(dict.fromkeys(parse_timeframe(t) for t in value.split(",") if t.strip()))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    if not chosen:
        raise typer.BadParameter("no timeframe given", param_hint=hint)
    return chosen


def parse_date(value: str | None, hint: str) -> int | None:
    if value is None:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise typer.BadParameter(f"invalid date {value!r}: expected YYYY-MM-DD", param_hint=hint) from None
    return int(day.timestamp() * 1000)


def parse_range(since: str | None, until: str | None, as_of: int | None) -> tuple[int | None, int | None]:
    """--since and --until as epoch ms (--until: the end of its day). A start in the future, or
    after the end, is a usage error: it would silently fetch nothing."""
    start, end = parse_date(since, "--since"), parse_date(until, "--until")
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


def parse_instant(value: str | None, hint: str = "--as-of") -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.removesuffix("Z"))
    except ValueError:
        raise typer.BadParameter(
            f"invalid instant {value!r}: expected YYYY-MM-DDTHH:MM", param_hint=hint
        ) from None
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


def parse_symbol_argument(value: str) -> str:
    try:
        return parse_symbol(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SYMBOL") from None
