"""``GET /api/v1/enrichment/series/{symbol}/{timeframe}/bars``: the query of a series' bars
for a chart, validated (``start``, ``end``, ``indicators``, ``limit``, ``max_points``). The
document is ``chartbars.bars_document``'s."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from multidict import MultiMapping

from enrichctl.chartbars import BarsQuery
from enrichctl.domain import MS_PER_DAY, Timeframe
from enrichctl.errors import UsageError
from enrichctl.web.params import query_check, symbol_param

LIMIT_DEFAULT = 5000
LIMIT_MAX = 10_000
POINTS_MIN = 10
PARAMS = ("start", "end", "indicators", "limit", "max_points")
# RFC 3339 full-date and date-time, exactly what the OpenAPI formats "date" / "date-time" allow.
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_DATETIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII)
_INT_RE = re.compile(r"[0-9]{1,7}", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bars_query_parse(symbol: str, timeframe: str, query: MultiMapping[str],
                     available: tuple[str, ...]) -> BarsQuery:
    """The validated request; ``UsageError`` (400) with one line on anything wrong."""
    query_check(query, PARAMS)
    try:
        tf = Timeframe(timeframe)
    except ValueError:
        choices = ", ".join(t.value for t in Timeframe)
        raise UsageError(f"invalid timeframe {timeframe[:20]!r}: expected one of {choices}") from None
    start = _instant(query.get("start"), "start", end_of_day=False)
    end = _instant(query.get("end"), "end", end_of_day=True)
    if start is not None and end is not None and start > end:
        raise UsageError("start is after end: nothing lies between them")
    limit = _int(query.get("limit"), "limit", 1, LIMIT_MAX, LIMIT_DEFAULT)
    points = _int(query.get("max_points"), "max_points", POINTS_MIN, LIMIT_MAX, None)
    return BarsQuery(symbol_param(symbol), tf, start, end,
                     _indicators(query.get("indicators"), available), limit, points)


def _instant(text: str | None, name: str, end_of_day: bool) -> int | None:
    if text is None:
        return None
    if _DATE_RE.fullmatch(text):
        try:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise UsageError(f"invalid {name} {text!r}: no such date") from None
        ms = _ms(day)
        return ms + MS_PER_DAY - 1 if end_of_day else ms  # a date means the whole day
    if _DATETIME_RE.fullmatch(text):
        try:
            return _ms(datetime.fromisoformat(text.upper()))
        except ValueError:
            raise UsageError(f"invalid {name} {text[:40]!r}: no such time") from None
    raise UsageError(f"invalid {name} {text[:40]!r}: expected a date (2024-06-03) or an "
                     "RFC 3339 time (2024-06-03T13:30:00Z)")


def _ms(moment: datetime) -> int:
    # Subtraction, not .timestamp(): it cannot overflow at year 1 with a negative offset.
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _int(text: str | None, name: str, low: int, high: int, default: int | None) -> int | None:
    if text is None:
        return default
    if not _INT_RE.fullmatch(text) or not low <= int(text) <= high:
        raise UsageError(f"invalid {name} {text[:20]!r}: expected an integer from {low} to {high}")
    return int(text)


def _indicators(text: str | None, available: tuple[str, ...]) -> tuple[str, ...]:
    if not text:
        return ()
    names = tuple(dict.fromkeys(text.split(",")))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(f"unknown indicator(s) {', '.join(unknown)[:100]}; "
                         f"stored: {', '.join(available) or 'none'}")
    return names
