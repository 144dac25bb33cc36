"""Rich tables for the dashboard documents, and the progress display of ``run``.

Each function takes a document exactly as ``--json`` would print it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Self, TextIO

from rich.console import Console
from rich.markup import escape as markup_escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from enrichctl.cli.tablefit import Col, bar_time, fitted, seconds, when
from enrichctl.domain import ms_to_iso, printable
from enrichctl.logs import log_event

# Wide enough for every table when piped or logged: rich would squeeze them into 80 columns and
# cut statuses and timestamps ("succe…"). A terminal, or $COLUMNS, still decides the width.
PIPED_WIDTH = 200


def _width(stream: TextIO) -> int | None:
    if "COLUMNS" in os.environ or stream.isatty():
        return None
    return PIPED_WIDTH


out = Console(highlight=False, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, width=_width(sys.stderr))

STATUS_STYLE = {
    "succeeded": "green",
    "healthy": "green",
    "running": "cyan",
    "retrying": "yellow",
    "partial": "yellow",
    "degraded": "yellow",
    "skipped": "dim",
    "never_run": "dim",
    "planned": "cyan",
    "failed": "red",
    "unhealthy": "red",
    "cancelled": "magenta",
    "abandoned": "magenta",
}


# With --log-format json every line on stderr is a JSON event: notices become log events.
NOTICES_AS_LOG = {"enabled": False}
_log = logging.getLogger("enrichctl.cli")


def notice(text: str, event: str, *, level: int = logging.WARNING, style: str = "yellow", **fields: Any) -> None:
    """A line for the person at the terminal, or a structured event under --log-format json."""
    if NOTICES_AS_LOG["enabled"]:
        log_event(_log, level, event, message=text, **fields)
    else:
        err.print(f"[{style}]{text}[/]" if style else text, markup=bool(style))


def _status(value: str | None) -> str:
    if value is None:
        return "-"
    style = STATUS_STYLE.get(value)
    return f"[{style}]{value}[/]" if style else value


def _v(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        return value.replace("T", " ").removesuffix("Z")
    return str(value)


class RunProgress:
    """A progress bar over the jobs of a run, on a terminal only."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last = ""  # the last finished job, shown again after a quota wait

    def __enter__(self) -> Self:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[last]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=err, transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def hook(self, kind: str, data: dict[str, Any]) -> None:
        if self._progress is None:
            if kind == "quota_wait":  # piped or logged: the log says why nothing moves
                log_event(_log, logging.INFO, "provider_quota_wait", seconds=round(data["seconds"], 1))
            return
        if kind == "plan":
            plan = data["plan"]
            self._task = self._progress.add_task(
                f"run {data['run_id']}", total=len(plan.jobs), last=f"{plan.requests} requests planned"
            )
            self._last = f"{plan.requests} requests planned"
        elif kind == "job_done" and self._task is not None:
            result = data["result"]
            self._last = f"{result.symbol} {result.status.value} (+{result.bars_written} bars)"
            self._progress.update(self._task, advance=1, last=self._last)
        elif kind == "quota_wait" and self._task is not None:
            self._progress.update(
                self._task, last=f"[yellow]waiting for the provider's quota ({data['seconds']:.0f} s)[/]"
            )
        elif kind == "quota_wait_done" and self._task is not None:
            self._progress.update(self._task, last=self._last)


def _stale(value: bool) -> str:
    return "[red]yes[/]" if value else "no"


def _freshness(row: dict[str, Any]) -> str:
    """The stale cell: a delisted ticker says so (it is not stale, and never will be fresher)."""
    return "[yellow]delisted[/]" if row.get("delisted") else _stale(row["stale"])


def run_report(doc: dict[str, Any]) -> None:
    if doc["status"] == "planned":
        plan_table(doc["plan"], doc)
        return
    if doc.get("synthetic"):
        notice("demo provider: synthetic data, not market data", "synthetic_data")
    if doc["message"]:
        out.print(doc["message"])
    if doc["jobs"]:
        cols = (
            Col("symbol", lambda j: j["symbol"]),
            Col("status", lambda j: _status(j["status"])),
            Col("written", lambda j: str(j["bars_written"]), 1, right=True),
            Col("error", lambda j: _v(j["error"]), 2, wrap=True),
            Col("issues", lambda j: str(j["issues"]), 3, right=True),
            Col("fetched", lambda j: str(j["bars_fetched"]), 4, right=True),
            Col("tries", lambda j: str(j["attempts"]), 5, right=True),
            Col("current", lambda j: str(j.get("series_up_to_date", 0)), 6, right=True),
            Col("took", lambda j: seconds(j.get("duration_ms", 0) / 1000), 7, right=True),
        )
        out.print(fitted(f"run {doc['run_id']}", cols, doc["jobs"], out.width))
    if doc["run_id"] is not None and doc["status"] != "skipped":
        if doc["bars_written"] == 0 and doc["jobs_failed"] == 0:
            out.print("everything is up to date: nothing new fetched, nothing written")
        source = " (demo provider: synthetic data)" if doc.get("synthetic") else ""
        out.print(
            f"run {doc['run_id']} {_status(doc['status'])}{source}: "
            f"{doc['jobs_succeeded']}/{doc['jobs_total']} symbols, "
            f"{doc['bars_fetched']} bars fetched, {doc['bars_written']} written, "
            f"{doc['requests']} provider requests, {seconds(doc['duration_s'])}"
        )
    if doc["error"]:
        notice(doc["error"], "run_error", level=logging.ERROR, style="red", run_id=doc["run_id"])


def plan_table(plan: dict[str, Any], doc: dict[str, Any]) -> None:
    cols = (
        Col("series", lambda t: t["series"]),
        Col("mode", lambda t: t["mode"]),
        Col("from", lambda t: bar_time(t["from"], t["timeframe"])),
        Col("to", lambda t: bar_time(t["to"], t["timeframe"])),
        Col("requests", lambda t: str(t["requests"]), 1, right=True),
    )
    out.print(fitted(f"plan ({doc['provider']}): nothing is changed", cols, plan["tasks"], out.width))
    out.print(f"{plan['to_fetch']} series to fetch, {plan['up_to_date']} up to date, "
              f"{plan['requests']} provider requests needed")


SYNTHETIC_MARK = "[yellow](demo)[/]"


def _mark(text: str, synthetic: bool | None) -> str:
    """The cell of a row holding synthetic data, marked so that it cannot pass for market data."""
    return f"{text} {SYNTHETIC_MARK}" if synthetic else text


def _synthetic_note(rows: list[dict[str, Any]]) -> None:
    if any(r.get("synthetic") for r in rows):
        out.print(f"{SYNTHETIC_MARK} synthetic data from the demo provider, not market data")


def _last_bar(s: dict[str, Any]) -> str:
    """The symbol's newest bar, shown as its series' timeframe shows it (a date for day bars)."""
    tf = next((x["timeframe"] for x in s["series"] if x["last_bar"] == s["last_bar"]), None)
    return bar_time(s["last_bar"], tf)


def overview(doc: dict[str, Any]) -> None:
    sched = doc["scheduler"]
    if sched["paused"]:
        out.print(f"[yellow]paused[/] since {when(sched['paused_since'])} by {sched['paused_by']}: "
                  f"{sched['paused_reason'] or 'no reason given'}")
    cols = (
        Col("symbol", lambda s: _mark(s["symbol"], s.get("synthetic"))),
        Col("status", lambda s: _status(s["status"])),
        Col("last bar", _last_bar),
        Col("stale", _freshness, 1),
        Col("last error", lambda s: _v(s["last_error"]), 2, wrap=True),
        Col("quality", lambda s: _v(s["quality_score"]), 3, right=True),
        Col("last success", lambda s: when(s["last_success"]), 4),
        Col("tries", lambda s: str(s["attempts"]), 5, right=True),
        Col("class", lambda s: s["asset_class"], 6),
    )
    out.print(fitted("symbols", cols, doc["processing_symbols"], out.width))
    _synthetic_note(doc["processing_symbols"])
    if sched.get("next_run"):
        out.print(f"next scheduled run {when(sched['next_run'])} ({sched['schedule']})")
    last = doc["last_run"]
    if last:
        out.print(f"last run {last['run_id']} ({last['trigger']}) {_status(last['status'])} "
                  f"at {when(last['started_at'])}, {last['bars_written']} bars written")
    _limiter_refused(doc.get("resilience"))
    if doc["active_run"]:
        out.print(f"[cyan]run {doc['active_run']['run_id']} is running[/]")
    if len(doc.get("workers", [])) > 1 or any(w["active"] for w in doc.get("workers", [])):
        cols = (
            Col("worker", lambda w: w["worker"], 3),
            Col("host", lambda w: w["host"]),
            Col("pid", lambda w: str(w["pid"]), right=True),
            Col("done", lambda w: str(w["jobs_done"]), right=True),
            Col("heartbeat", lambda w: when(w["last_heartbeat"]), 1),
            Col("active", lambda w: "yes" if w["active"] else "no"),
        )
        out.print(fitted(f"workers of run {doc['workers'][0]['run_id']}", cols, doc["workers"], out.width))
    totals = doc["totals"]
    out.print(f"{totals['symbols']} symbols, {totals['series']} series, {totals['bars']} bars stored")


def job_status(doc: dict[str, Any]) -> None:
    source = f", from {doc['provider']}" if doc.get("provider") else ""
    delisted = ", [yellow]delisted[/]" if doc.get("delisted") else ""
    out.print(f"[bold]{doc['symbol']}[/] ({doc['asset_class']}): {_status(doc['status'])}{delisted}, "
              f"attempts {doc['attempts']}, quality {_v(doc['quality_score'])}{source}")
    cols = (
        Col("tf", lambda s: _mark(s["timeframe"], s.get("synthetic"))),
        Col("last bar", lambda s: bar_time(s["last_bar"], s["timeframe"])),
        Col("bars", lambda s: str(s["bars"]), right=True),
        Col("stale", _freshness, 1),
        Col("quality", lambda s: _v(s["quality_score"]), 1, right=True),
        Col("last error", lambda s: _v(s["last_error"]), 2, wrap=True),
        Col("first bar", lambda s: bar_time(s["first_bar"], s["timeframe"]), 3),
        Col("issues", lambda s: str(s["issues"]), 4, right=True),
        Col("last success", lambda s: when(s["last_success"]), 5),
    )
    out.print(fitted("series", cols, doc["series"], out.width))
    _synthetic_note(doc["series"])
    out.print(fitted("recent jobs", _job_cols(), doc["recent_jobs"], out.width))
    if doc["recent_issues"]:
        cols = (
            Col("tf", lambda i: i["timeframe"]),
            Col("kind", lambda i: i["kind"]),
            Col("at", lambda i: bar_time(i["at"], i["timeframe"]), 1),
            Col("detail", lambda i: i["detail"], wrap=True),
            Col("severity", lambda i: i["severity"], 2),
        )
        out.print(fitted("recent quality issues", cols, doc["recent_issues"], out.width))
    if doc.get("corporate_actions"):
        cols = (
            Col("date", lambda a: a["ex_date"]),
            Col("kind", lambda a: a["kind"]),
            Col("action", lambda a: a["description"], wrap=True),
        )
        out.print(fitted("corporate actions", cols, doc["corporate_actions"], out.width))
    if doc.get("adjustment"):
        out.print(f"[dim]{doc['adjustment']}[/]")


def _job_cols() -> tuple[Col, ...]:
    return (
        Col("run", lambda j: str(j["run_id"]), right=True),
        Col("status", lambda j: _status(j["status"])),
        Col("started", lambda j: when(j["started_at"]), 1),
        Col("error", lambda j: _v(j["error"]), 1, wrap=True),
        Col("written", lambda j: str(j["bars_written"]), 2, right=True),
        Col("took", lambda j: seconds(None if j["duration_ms"] is None else j["duration_ms"] / 1000), 3, right=True),
        Col("tries", lambda j: str(j["attempts"]), 4, right=True),
    )


def health(doc: dict[str, Any]) -> None:
    out.print(f"health: {_status(doc['status'])}")
    for line in doc["issues"]:
        out.print(f"  {line}")


def history(doc: dict[str, Any]) -> None:
    cols = (
        Col("run", lambda r: _mark(str(r["run_id"]), r.get("synthetic")), right=True),
        Col("status", lambda r: _status(r["status"])),
        Col("started", lambda r: when(r["started_at"])),
        Col("symbols", lambda r: f"{r['jobs_succeeded']}/{r['jobs_total']}", 1, right=True),
        Col("took", lambda r: seconds(r["duration_s"]), 2, right=True),
        Col("error", lambda r: _v(r["error"]), 2, wrap=True),
        Col("written", lambda r: str(r["bars_written"]), 3, right=True),
        Col("requests", lambda r: str(r["requests"]), 4, right=True),
        Col("trigger", lambda r: r["trigger"], 5),
        Col("fetched", lambda r: str(r["bars_fetched"]), 6, right=True),
    )
    out.print(fitted("runs", cols, doc["runs"], out.width))
    _synthetic_note(doc["runs"])


def metrics(doc: dict[str, Any]) -> None:
    for section in ("fetch_pipeline", "compute_pipeline", "data_quality"):
        table = Table(title=f"{section} (last {doc['window_hours']} h)", title_justify="left", show_header=False)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in doc[section].items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
            table.add_row(key, when(value) if key.endswith("_at") else _v(value))
        out.print(table)
    _quota_refused(doc["fetch_pipeline"], doc["window_hours"])
    quality = doc["data_quality"]
    if quality.get("synthetic_series"):
        out.print(f"{SYNTHETIC_MARK} {quality['synthetic_series']} of {sum(quality['series_by_provider'].values())} "
                  "stored series hold synthetic data from the demo provider, not market data")


def _limiter_refused(resilience: dict[str, Any] | None) -> None:
    """The provider's refusals in the last run, from its stored snapshot, and what they taught."""
    for name, lim in sorted(((resilience or {}).get("rate_limiters") or {}).items()):
        if not lim.get("refused"):
            continue
        slowed = ""
        if lim.get("effective_rate") is not None and lim["effective_rate"] < lim.get("rate", 0):
            slowed = f"; it slowed to {lim['effective_rate']} of the {lim['rate']} requests configured per window"
        out.print(f"[yellow]{name} refused {lim['refused']} requests (HTTP 429) in the last run, the last at "
                  f"{when(_iso_of(lim.get('last_refused_at')))}{slowed}[/]")


def _iso_of(unix: float | None) -> str | None:
    return ms_to_iso(int(unix * 1000)) if unix is not None else None


def _quota_refused(fetch: dict[str, Any], hours: int) -> None:
    """Say it when the provider refused: a plan smaller than configured costs every run time."""
    if not fetch.get("api_quota_refused"):
        return
    out.print(f"[yellow]the provider refused {fetch['api_quota_refused']} requests (HTTP 429) in the last "
              f"{hours} h, the last at {when(fetch['api_quota_last_refused_at'])}[/]")
    effective, limit = fetch.get("api_quota_effective_rate"), fetch.get("api_quota_limit")
    if effective is not None and limit is not None and effective < limit:
        out.print(f"[yellow]the last run slowed to {effective} requests per window of the {limit} configured: "
                  f"the plan allows less; set polygon.requests_per_minute = {effective}[/]")


def verify(doc: dict[str, Any]) -> None:
    provider = doc.get("provider")

    def detail(s: dict[str, Any]) -> str:
        # Values the provider disagrees with first: time, field and both values.
        details = [f"{m['at']} {m['field']}: stored {m['stored']}, {provider} {m[provider]}"
                   for m in s.get("mismatches", [])[:3]]
        if s.get("mismatched_bars", 0) > 3:
            details.append(f"{s['mismatched_bars']} bars differ in all")
        details += [s[k] for k in ("error", "compare_note") if s.get(k)]
        details += [i["detail"] for i in s["issues"][:3]]
        diff, where = s.get("max_indicator_diff"), s.get("max_indicator_diff_at")
        if where and not s["ok"]:
            # Where the recompute disagrees most: the first thing to look at.
            details.append(where if diff is None else f"largest indicator difference: {where}")
        return "; ".join(details) or "-"

    cols = (
        Col("series", lambda s: s["series"]),
        Col("bars", lambda s: str(s["bars"]), right=True),
        Col("ok", lambda s: "[green]yes[/]" if s["ok"] else "[red]no[/]"),
        Col("issues", lambda s: str(len(s["issues"])), 1, right=True),
        Col("detail", detail, wrap=True),
        Col("max indicator diff", lambda s: _v(s.get("max_indicator_diff")), 2, right=True),
    )
    if not doc.get("recompute"):
        cols = cols[:-1]  # nothing was recomputed: an empty column only takes room
    out.print(fitted("verify", cols, doc["series"], out.width))
    if doc.get("sample"):
        sample = doc["sample"]
        out.print(f"compared {sample['ranges']} of {sample['of']} stored ranges with {provider} (seed {sample['seed']})")
    out.print("[green]all series verified[/]" if doc["ok"] else "[red]problems found[/]")


def config(doc: dict[str, Any], prefix: str = "") -> None:
    for key, value in doc.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()) and prefix == "":
            for k, v in value.items():
                out.print(f"{key}.{k} = {_v(v)}")
        elif isinstance(value, list):
            out.print(f"{prefix}{key} = {', '.join(_v(v if not isinstance(v, dict) else v.get('symbol')) for v in value)}")
        else:
            out.print(f"{prefix}{key} = {_v(value)}")


# The inventory marks synthetic series with a star: its narrow table has no room for "(demo)".
INVENTORY_MARK = "*"


def series_inventory(doc: dict[str, Any]) -> None:
    def provider(s: dict[str, Any]) -> str:
        return f"{s['provider']} [yellow](synthetic)[/]" if s["synthetic"] else s["provider"]

    # The provider column is among the first dropped at 80 columns; synthetic data must never
    # pass for market data, so the always-shown series column carries a mark, explained below.
    def series(s: dict[str, Any]) -> str:
        mark = f"[yellow]{INVENTORY_MARK}[/]" if s["synthetic"] else ""
        return f"{s['symbol']}/{s['timeframe']}{mark}"

    cols = (
        Col("series", series),
        Col("first bar", lambda s: bar_time(s["first_bar"], s["timeframe"])),
        Col("last bar", lambda s: bar_time(s["last_bar"], s["timeframe"])),
        Col("bars", lambda s: str(s["bars"]), right=True),
        Col("stale", _freshness, 1),
        Col("provider", provider, 2),
        Col("quality", lambda s: _v(s["quality_score"]), 3, right=True),
        Col("issues", lambda s: str(s["issues"]), 4, right=True),
        Col("configured", lambda s: "yes" if s["configured"] else "[yellow]no[/]", 5),
    )
    out.print(fitted("stored series", cols, doc["series"], out.width))
    out.print(f"{doc['count']} series, {doc['bars']} bars")
    if any(s["synthetic"] for s in doc["series"]):
        out.print(f"[yellow]{INVENTORY_MARK}[/] synthetic: the demo provider's data, not market data")


def run_detail(doc: dict[str, Any]) -> None:
    source = " (synthetic)" if doc["synthetic"] else ""
    out.print(f"run {doc['run_id']} ({doc['trigger']}, {doc['provider']}{source}) {_status(doc['status'])}: "
              f"started {when(doc['started_at'])}, took {seconds(doc['duration_s'])}, "
              f"{doc['jobs_succeeded']}/{doc['jobs_total']} symbols, {doc['bars_written']} bars written, "
              f"{doc['requests']} provider requests")
    if doc["error"]:
        out.print(f"[red]error: {doc['error']}[/]")
    cols = (
        Col("symbol", lambda j: j["symbol"]),
        Col("status", lambda j: _status(j["status"])),
        Col("tries", lambda j: str(j["attempts"]), 1, right=True),
        Col("error", lambda j: _v(j["error"]), 1, wrap=True),
        Col("took", lambda j: seconds(None if j["duration_ms"] is None else j["duration_ms"] / 1000), 2, right=True),
        Col("requests", lambda j: f"{j['requests']}" + (f" ({j['requests_failed']} failed)" if j["requests_failed"] else ""), 3, right=True),
        Col("written", lambda j: str(j["bars_written"]), 4, right=True),
        Col("fetched", lambda j: str(j["bars_fetched"]), 5, right=True),
    )
    out.print(fitted("jobs", cols, doc["jobs"], out.width))
    tasks = [{**t, "symbol": j["symbol"]} for j in doc["jobs"] for t in j["tasks"]]
    if tasks:
        cols = (
            Col("series", lambda t: f"{t['symbol']}/{t['timeframe']}"),
            Col("try", lambda t: str(t["attempt"]), right=True),
            Col("status", lambda t: _status(t["status"])),
            Col("error", lambda t: _v(t["error"]), 1, wrap=True),
            Col("written", lambda t: str(t["bars_written"]), 2, right=True),
            Col("from", lambda t: bar_time(t["from"], t["timeframe"]), 3),
            Col("to", lambda t: bar_time(t["to"], t["timeframe"]), 4),
            Col("fetch ms", lambda t: _v(t["fetch_ms"]), 5, right=True),
            Col("fetched", lambda t: str(t["bars_fetched"]), 6, right=True),
        )
        out.print(fitted("attempts", cols, tasks, out.width))


def shown(doc: Any) -> Any:
    """The document with every string safe to print: control characters escaped (an ANSI escape
    in a stored pause reason must not reach the terminal raw) and rich markup quoted (a reason
    of "[/]" is text, not a tag). For the tables only: ``--json`` prints the document exact."""
    if isinstance(doc, str):
        return markup_escape(printable(doc))
    if isinstance(doc, dict):
        return {k: shown(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [shown(v) for v in doc]
    return doc
