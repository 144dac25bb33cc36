"""Tables that fit the terminal without cutting a status, a time or a number, and the times in them.

Every column has a priority. A table that would be wider than the console drops its least useful
columns (highest priority number) until it fits; free-text columns (errors, details) wrap instead
of being cut, down to ``WRAP_MIN`` characters. The dropped columns stay in ``--json`` and show at a
wider terminal.

Times carry their zone: instants are printed in UTC to the minute with "UTC"; day and week bars,
which start at midnight New York, are printed as the date they cover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.table import Table
from rich.text import Text

NEW_YORK = ZoneInfo("America/New_York")
WRAP_MIN = 12  # a wrapped column narrower than this is unreadable: drop a column instead
BORDER_PER_COLUMN = 3  # "│ x " in rich's default box
DAY_TIMEFRAMES = ("1d", "1w")


@dataclass(frozen=True, slots=True)
class Col:
    header: str
    cell: Callable[[dict[str, Any]], str]  # the row's text (rich markup allowed)
    priority: int = 0  # 0: always shown; higher numbers are dropped first
    right: bool = False  # numbers
    wrap: bool = False  # free text that may wrap instead of widening the table


def fitted(title: str | None, cols: Sequence[Col], rows: Sequence[dict[str, Any]], width: int) -> Table:
    """A rich table of ``rows`` holding only the columns that fit in ``width`` characters."""
    cells = [[c.cell(r) for c in cols] for r in rows]
    natural = [
        max([_cell_len(c.header), *(_cell_len(row[i]) for row in cells)])
        for i, c in enumerate(cols)
    ]
    kept = list(range(len(cols)))

    def needed() -> int:
        widths = (min(natural[i], WRAP_MIN) if cols[i].wrap else natural[i] for i in kept)
        return sum(widths) + BORDER_PER_COLUMN * len(kept) + 1

    for i in sorted(range(len(cols)), key=lambda i: -cols[i].priority):
        if needed() <= width or cols[i].priority == 0:
            break
        kept.remove(i)
    table = Table(title=title, title_justify="left")
    for i in kept:
        c = cols[i]
        if c.wrap:
            table.add_column(c.header, overflow="fold", min_width=min(natural[i], WRAP_MIN))
        else:
            table.add_column(c.header, justify="right" if c.right else "left", no_wrap=True,
                             min_width=natural[i])
    for row in cells:
        table.add_row(*(row[i] for i in kept))
    return table


def _cell_len(markup: str) -> int:
    return Text.from_markup(markup).cell_len


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def when(iso: str | None) -> str:
    """An instant: '2024-06-05 00:00 UTC' (``-`` when there is none)."""
    if not iso:
        return "-"
    return _parse(iso).strftime("%Y-%m-%d %H:%M UTC")


def bar_time(iso: str | None, timeframe: str | None) -> str:
    """A bar's start: the New York date for day and week bars, else the UTC instant."""
    if not iso:
        return "-"
    if timeframe in DAY_TIMEFRAMES:
        moment = _parse(iso)
        if moment.hour == moment.minute == 0:  # a range starting on a --since day, not a bar
            return moment.strftime("%Y-%m-%d")
        return moment.astimezone(NEW_YORK).strftime("%Y-%m-%d")
    return when(iso)


def seconds(value: float | None) -> str:
    """A duration, short and unbreakable: '0.4s', '12s', '3m05s', '2h05m'."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}s"
    if value < 60:
        return f"{value:.0f}s"
    minutes, rest = divmod(int(round(value)), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
