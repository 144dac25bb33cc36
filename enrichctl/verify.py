"""``enrichctl verify``: re-check stored series, recompute their indicators, compare them with
the provider.

Both comparisons record what they find as quality issues (``indicator_mismatch``,
``provider_mismatch``), so ``status``, the score and ``serve`` show it until a run repairs the
series: the planner refetches a series with such an issue whole, which replaces its issues.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from enrichctl.calendar import SessionCalendar
from enrichctl.domain import (
    AssetClass,
    Bars,
    IssueKind,
    QualityIssue,
    RequestRecord,
    Series,
    Severity,
    Timeframe,
    ms_to_iso,
)
from enrichctl.errors import NotFound, ProviderError
from enrichctl.pipeline.indicators import IndicatorSet
from enrichctl.pipeline.quality import SEVERITY_WEIGHT, check_batch, check_stored, quality_score
from enrichctl.providers.base import Provider
from enrichctl.runs import provider_for, store_open
from enrichctl.settings import Settings
from enrichctl.store.repo import Store
from enrichctl.store.rows import SeriesRow

# Stored indicator values must equal a recompute over the whole series this closely.
VERIFY_RTOL = 1e-9
COMPARED_FIELDS = ("open", "high", "low", "close", "volume", "vwap", "trades")
RECORDED_PER_SERIES = 20  # mismatching bars recorded one by one; the rest in one summary issue
SHOWN_PER_SERIES = 50  # field mismatches listed in the document


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    recompute: bool = False
    against_provider: bool = False
    sample: int | None = None  # refetch only this many ranges (one provider request each)
    seed: int = 0  # which ranges a sample picks: the same seed picks the same ones


async def verify(settings: Settings, symbol: str | None, options: VerifyOptions) -> dict[str, Any]:
    """Re-check every stored series (or one symbol's); ``ok`` is False when anything is off."""
    calendar = SessionCalendar()
    indicators = IndicatorSet(settings.indicators)
    async with store_open(settings) as store:
        await store.integrity_check()  # a damaged file first: its rows cannot be trusted
        rows = [r for r in await store.series_list(symbol) if r.first_ts is not None]
        if symbol is not None and not rows:
            raise NotFound(f"no stored series for {symbol}")
        out = [await _check_series(store, _series(r), calendar, indicators, settings, options.recompute)
               for r in rows]
        doc: dict[str, Any] = {"recompute": options.recompute, "against_provider": options.against_provider}
        if options.against_provider:
            compared = await _against_provider(store, settings, calendar, rows, options)
            doc["provider"] = compared["provider"]
            doc["sample"] = compared["sample"]
            for entry in out:
                entry.update(compared["series"].get(entry["series"], {"compared": False}))
                if entry.get("error") or entry.get("mismatches"):
                    entry["ok"] = False
    return {"ok": all(s["ok"] for s in out), **doc, "series": out}


def _series(row: SeriesRow) -> Series:
    return Series(row.symbol, AssetClass(row.asset_class), Timeframe(row.timeframe))


def _weight(issue: QualityIssue) -> float:
    return SEVERITY_WEIGHT[issue.severity]


async def _check_series(
    store: Store, series: Series, calendar: SessionCalendar, indicators: IndicatorSet,
    settings: Settings, recompute: bool,
) -> dict[str, Any]:
    bars = await store.bars_range(series)
    issues = check_stored(series, bars, calendar, settings.quality)
    for ts, n in await store.bars_duplicates(series):
        issues.append(QualityIssue(IssueKind.DUPLICATE, Severity.ERROR, f"{n} rows stored for {ms_to_iso(ts)}", ts))
    doc: dict[str, Any] = {
        "series": str(series),
        "bars": len(bars),
        "quality_score": round(quality_score(len(bars), issues), 4),
        "issues": [_issue_doc(i) for i in issues],
    }
    off = any(i.severity is Severity.ERROR for i in issues) or any(i.kind is IssueKind.GAP for i in issues)
    if recompute:
        expected = indicators.compute(bars, series.timeframe.periods_per_year(series.asset_class))
        ind_ts, stored = await store.indicators_range(series)
        worst = indicator_difference(bars.ts, expected, ind_ts, stored)
        doc["max_indicator_diff"] = worst.diff
        doc["max_indicator_diff_at"] = worst.where
        if worst.diff is None or worst.diff > VERIFY_RTOL:
            off = True
            found = QualityIssue(IssueKind.INDICATOR_MISMATCH, Severity.ERROR,
                                 f"verify --recompute: {worst.text()}", worst.ts)
            doc["issues"].append(_issue_doc(found))
            doc["recorded_indicator_issues"] = await store.issues_record(series, [found], _weight)
    doc["ok"] = not off
    return doc


def _issue_doc(issue: QualityIssue) -> dict[str, Any]:
    return {"kind": issue.kind.value, "severity": issue.severity.value, "at": ms_to_iso(issue.ts),
            "detail": issue.detail}


# --- --recompute --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndicatorDifference:
    """The largest relative difference between recomputed and stored indicator values: inf
    when a value is missing on one side only, None when the rows do not line up at all."""

    diff: float | None
    where: str | None
    ts: int | None = None
    stored: float | None = None
    expected: float | None = None

    def text(self) -> str:
        if self.stored is None and self.expected is None:
            return self.where or "indicators differ"
        return (f"{self.where}: stored {_value(self.stored)}, recomputed {_value(self.expected)}"
                f" (relative difference {self.diff:.3g})")


def indicator_difference(
    ts: np.ndarray, expected: dict[str, np.ndarray], ind_ts: np.ndarray, stored: dict[str, np.ndarray]
) -> IndicatorDifference:
    if not np.array_equal(ts, ind_ts):
        return IndicatorDifference(None, "indicator rows do not match the stored bars")
    worst = IndicatorDifference(0.0, None)
    for name, want in expected.items():
        have = stored.get(name)
        if have is None:
            return IndicatorDifference(None, f"column {name} is not stored")
        nan_mismatch = np.isnan(want) != np.isnan(have)
        if nan_mismatch.any():
            i = int(np.argmax(nan_mismatch))
            return IndicatorDifference(math.inf, f"{name} at {ms_to_iso(int(ts[i]))}", int(ts[i]),
                                       float(have[i]), float(want[i]))
        both = np.flatnonzero(~np.isnan(want))
        if not len(both):
            continue
        scale = np.maximum(np.maximum(np.abs(want[both]), np.abs(have[both])), 1e-12)
        rel = np.abs(want[both] - have[both]) / scale
        j = int(np.argmax(rel))
        if worst.diff is not None and rel[j] > worst.diff:
            i = int(both[j])
            worst = IndicatorDifference(float(rel[j]), f"{name} at {ms_to_iso(int(ts[i]))}", int(ts[i]),
                                        float(have[i]), float(want[i]))
    return worst


# --- --against-provider ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Range:
    row: SeriesRow
    start: int
    end: int


async def _against_provider(
    store: Store, settings: Settings, calendar: SessionCalendar, rows: list[SeriesRow],
    options: VerifyOptions,
) -> dict[str, Any]:
    """Refetch each stored range (or a sample of them) through the run's resilience stack and
    compare every field exactly; record each differing bar as a ``provider_mismatch``."""
    records: list[RequestRecord] = []
    provider = provider_for(settings, store, calendar, records.append)
    docs: dict[str, dict[str, Any]] = {}
    try:
        mine = [r for r in rows if r.provider == provider.name]
        for row in rows:
            if row.provider != provider.name:
                docs[str(_series(row))] = {
                    "compared": False,
                    "compare_note": f"stored from {row.provider}, not {provider.name}: the next run replaces it",
                }
        ranges = _ranges(provider, mine)
        chosen = _sample(ranges, options.sample, options.seed)
        for row in mine:
            picked = [r for r in chosen if r.row is row]
            if picked:
                docs[str(_series(row))] = await _compare_series(store, settings, calendar, provider, row, picked)
            else:
                docs[str(_series(row))] = {"compared": False, "compare_note": "not in the sample"}
    finally:
        await provider.aclose()
        await store.requests_record(records)
    return {"provider": provider.name,
            "sample": {"ranges": len(chosen), "of": len(ranges), "seed": options.seed}
            if options.sample is not None else None,
            "series": docs}


def _ranges(provider: Provider, rows: list[SeriesRow]) -> list[_Range]:
    """Every stored span cut where the provider cuts its requests (one request per range)."""
    chunks: Callable[[Series, int, int], list[tuple[int, int]]] | None = getattr(provider, "chunks", None)
    out = []
    for row in rows:
        assert row.first_ts is not None and row.watermark is not None
        spans = chunks(_series(row), row.first_ts, row.watermark) if chunks else [(row.first_ts, row.watermark)]
        out.extend(_Range(row, a, b) for a, b in spans)
    return out


def _sample(ranges: list[_Range], n: int | None, seed: int) -> list[_Range]:
    """``n`` ranges picked by a seeded hash (the same seed, the same ranges), in stored order."""
    if n is None or n >= len(ranges):
        return ranges

    def rank(r: _Range) -> bytes:
        return hashlib.blake2b(f"{seed}:{r.row.symbol}:{r.row.timeframe}:{r.start}".encode(),
                               digest_size=8).digest()

    picked = set(map(id, sorted(ranges, key=rank)[:n]))
    return [r for r in ranges if id(r) in picked]


async def _compare_series(
    store: Store, settings: Settings, calendar: SessionCalendar, provider: Provider,
    row: SeriesRow, ranges: list[_Range],
) -> dict[str, Any]:
    series = _series(row)
    mismatches: list[dict[str, Any]] = []
    differing: list[QualityIssue] = []
    compared = 0
    for r in ranges:
        try:
            raw = await provider.fetch_bars(series, r.start, r.end)
        except ProviderError as exc:
            return {"compared": True, "ranges": len(ranges), "compared_bars": compared,
                    "error": f"{provider.name} failed on {ms_to_iso(r.start)}..{ms_to_iso(r.end)}: {exc.message}"}
        # What a run would have stored from this answer (sorted, unique, in range, usable).
        fresh = check_batch(series, raw, r.start, r.end, calendar, settings.quality).bars
        stored = await store.bars_range(series, r.start, r.end)
        compared += len(stored)
        found, bars_off = bar_differences(stored, fresh, provider.name)
        mismatches.extend(found)
        differing.extend(bars_off)
    recorded = await _record(store, series, differing)
    return {
        "compared": True,
        "ranges": len(ranges),
        "compared_bars": compared,
        "mismatched_bars": len(differing),
        "mismatches": mismatches[:SHOWN_PER_SERIES],
        "recorded": recorded,
    }


def bar_differences(stored: Bars, fresh: Bars, provider: str) -> tuple[list[dict[str, Any]], list[QualityIssue]]:
    """Every field that differs (exactly; NaN equals NaN) and every bar only one side has, as
    documents, and one issue per differing bar naming its fields and both values."""
    rows: list[dict[str, Any]] = []
    issues: list[QualityIssue] = []
    both, si, fi = np.intersect1d(stored.ts, fresh.ts, assume_unique=True, return_indices=True)
    per_bar: dict[int, list[str]] = {}
    for name in COMPARED_FIELDS:
        a, b = getattr(stored, name)[si], getattr(fresh, name)[fi]
        off = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))
        for k in off.tolist():
            ts = int(both[k])
            rows.append({"at": ms_to_iso(ts), "field": name, "stored": _num(a[k]), provider: _num(b[k])})
            per_bar.setdefault(ts, []).append(f"{name} stored {_value(a[k])}, {provider} {_value(b[k])}")
    for ts in np.setdiff1d(stored.ts, fresh.ts).tolist():
        rows.append({"at": ms_to_iso(ts), "field": "bar", "stored": "present", provider: "missing"})
        per_bar.setdefault(ts, []).append(f"stored bar not in {provider}'s answer")
    for ts in np.setdiff1d(fresh.ts, stored.ts).tolist():
        rows.append({"at": ms_to_iso(ts), "field": "bar", "stored": "missing", provider: "present"})
        per_bar.setdefault(ts, []).append(f"{provider} has a bar that is not stored")
    for ts in sorted(per_bar):
        issues.append(QualityIssue(IssueKind.PROVIDER_MISMATCH, Severity.ERROR,
                                   f"{ms_to_iso(ts)}: " + "; ".join(per_bar[ts]), ts))
    rows.sort(key=lambda r: r["at"])
    return rows, issues


async def _record(store: Store, series: Series, differing: list[QualityIssue]) -> int:
    """The first bars one by one, the rest in one summary issue that weighs as many bars."""
    if not differing:
        return 0
    recorded = differing[:RECORDED_PER_SERIES]
    weights = {id(i): 1.0 for i in recorded}
    if len(differing) > RECORDED_PER_SERIES:
        rest = differing[RECORDED_PER_SERIES:]
        summary = QualityIssue(IssueKind.PROVIDER_MISMATCH, Severity.ERROR,
                               f"{len(rest)} more bars differ from the provider, up to {ms_to_iso(rest[-1].ts)}",
                               rest[0].ts)
        recorded.append(summary)
        weights[id(summary)] = float(len(rest))
    return await store.issues_record(series, recorded, lambda i: weights[id(i)])


def _num(x: float) -> float | int | None:
    if math.isnan(x):
        return None
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def _value(x: float | None) -> str:
    return "none" if x is None or math.isnan(x) else repr(_num(x))
