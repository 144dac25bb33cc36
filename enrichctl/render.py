"""Rich tables for the dashboard documents, and the progress display of ``run``.

Each function takes a document exactly as ``--json`` would print it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

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

    def __enter__(self) -> Self:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[last]}"), TimeElapsedColumn(), console=err, transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def hook(self, kind: str, data: dict[str, Any]) -> None:
        if self._progress is None:
            return
        if kind == "plan":
            plan = data["plan"]
            self._task = self._progress.add_task(
                f"run {data['run_id']}", total=len(plan.jobs), last=f"{plan.requests} requests planned"
            )
        elif kind == "job_done" and self._task is not None:
            result = data["result"]
            self._progress.update(
                self._task, advance=1, last=f"{result.symbol} {result.status.value} (+{result.bars_written} bars)"
            )


def run_report(doc: dict[str, Any]) -> None:
    if doc["status"] == "planned":
        plan_table(doc["plan"], doc)
        return
    if doc.get("synthetic"):
        err.print("[yellow]demo provider: synthetic data, not market data[/]")
    if doc["message"]:
        out.print(doc["message"])
    if doc["jobs"]:
        table = Table(title=f"run {doc['run_id']}", title_justify="left")
        for col in ("symbol", "status", "attempts", "fetched", "written", "up to date", "issues", "error"):
            table.add_column(col, justify="right" if col in ("attempts", "fetched", "written", "issues") else "left")
        for j in doc["jobs"]:
            series_total = j.get("series_up_to_date", 0)
            table.add_row(j["symbol"], _status(j["status"]), str(j["attempts"]), str(j["bars_fetched"]),
                          str(j["bars_written"]), str(series_total), str(j["issues"]), _v(j["error"]))
        out.print(table)
    if doc["run_id"] is not None and doc["status"] != "skipped":
        if doc["bars_written"] == 0 and doc["jobs_failed"] == 0:
            out.print("everything is up to date: nothing new fetched, nothing written")
        source = " (demo provider: synthetic data)" if doc.get("synthetic") else ""
        out.print(
            f"run {doc['run_id']} {_status(doc['status'])}{source}: "
            f"{doc['jobs_succeeded']}/{doc['jobs_total']} symbols, "
            f"{doc['bars_fetched']} bars fetched, {doc['bars_written']} written, "
            f"{doc['requests']} provider requests, {_v(doc['duration_s'])} s"
        )
    if doc["error"]:
        err.print(f"[red]{doc['error']}[/]")


def plan_table(plan: dict[str, Any], doc: dict[str, Any]) -> None:
    table = Table(title=f"plan ({doc['provider']}): nothing is changed", title_justify="left")
    for col in ("series", "mode", "from", "to", "requests"):
        table.add_column(col, justify="right" if col == "requests" else "left")
    for t in plan["tasks"]:
        table.add_row(t["series"], t["mode"], _v(t["from"]), _v(t["to"]), str(t["requests"]))
    out.print(table)
    out.print(f"{plan['to_fetch']} series to fetch, {plan['up_to_date']} up to date, "
              f"{plan['requests']} provider requests needed")


def overview(doc: dict[str, Any]) -> None:
    sched = doc["scheduler"]
    if sched["paused"]:
        out.print(f"[yellow]paused[/] since {_v(sched['paused_since'])} by {sched['paused_by']}: "
                  f"{sched['paused_reason'] or 'no reason given'}")
    table = Table(title="symbols", title_justify="left")
    for col in ("symbol", "class", "status", "last bar", "last success", "attempts", "quality", "stale", "last error"):
        table.add_column(col)
    for s in doc["processing_symbols"]:
        table.add_row(s["symbol"], s["asset_class"], _status(s["status"]), _v(s["last_bar"]),
                      _v(s["last_success"]), str(s["attempts"]), _v(s["quality_score"]),
                      "[red]yes[/]" if s["stale"] else "no", _v(s["last_error"]))
    out.print(table)
    if sched.get("next_run"):
        out.print(f"next scheduled run {_v(sched['next_run'])} ({sched['schedule']})")
    last = doc["last_run"]
    if last:
        out.print(f"last run {last['run_id']} ({last['trigger']}) {_status(last['status'])} "
                  f"at {_v(last['started_at'])}, {last['bars_written']} bars written")
    if doc["active_run"]:
        out.print(f"[cyan]run {doc['active_run']['run_id']} is running[/]")
    if len(doc.get("workers", [])) > 1 or any(w["active"] for w in doc.get("workers", [])):
        workers = Table(title=f"workers of run {doc['workers'][0]['run_id']}", title_justify="left")
        for col in ("worker", "host", "pid", "jobs done", "last heartbeat", "active"):
            workers.add_column(col)
        for w in doc["workers"]:
            workers.add_row(w["worker"], w["host"], str(w["pid"]), str(w["jobs_done"]),
                            _v(w["last_heartbeat"]), "yes" if w["active"] else "no")
        out.print(workers)
    totals = doc["totals"]
    out.print(f"{totals['symbols']} symbols, {totals['series']} series, {totals['bars']} bars stored")


def job_status(doc: dict[str, Any]) -> None:
    out.print(f"[bold]{doc['symbol']}[/] ({doc['asset_class']}): {_status(doc['status'])}, "
              f"attempts {doc['attempts']}, quality {_v(doc['quality_score'])}")
    table = Table(title="series", title_justify="left")
    for col in ("timeframe", "first bar", "last bar", "bars", "last success", "quality", "issues", "stale", "last error"):
        table.add_column(col)
    for s in doc["series"]:
        table.add_row(s["timeframe"], _v(s["first_bar"]), _v(s["last_bar"]), str(s["bars"]),
                      _v(s["last_success"]), _v(s["quality_score"]), str(s["issues"]),
                      "[red]yes[/]" if s["stale"] else "no", _v(s["last_error"]))
    out.print(table)
    jobs = Table(title="recent jobs", title_justify="left")
    for col in ("run", "status", "attempts", "started", "ms", "written", "error"):
        jobs.add_column(col)
    for j in doc["recent_jobs"]:
        jobs.add_row(str(j["run_id"]), _status(j["status"]), str(j["attempts"]), _v(j["started_at"]),
                     _v(j["duration_ms"]), str(j["bars_written"]), _v(j["error"]))
    out.print(jobs)
    if doc["recent_issues"]:
        issues = Table(title="recent quality issues", title_justify="left")
        for col in ("timeframe", "kind", "severity", "at", "detail"):
            issues.add_column(col)
        for i in doc["recent_issues"]:
            issues.add_row(i["timeframe"], i["kind"], i["severity"], _v(i["at"]), i["detail"])
        out.print(issues)


def health(doc: dict[str, Any]) -> None:
    out.print(f"health: {_status(doc['status'])}")
    for line in doc["issues"]:
        out.print(f"  {line}")


def history(doc: dict[str, Any]) -> None:
    table = Table(title="runs", title_justify="left")
    for col in ("run", "trigger", "status", "started", "duration s", "symbols ok/total", "fetched", "written", "requests", "error"):
        table.add_column(col)
    for r in doc["runs"]:
        table.add_row(str(r["run_id"]), r["trigger"], _status(r["status"]), _v(r["started_at"]),
                      _v(r["duration_s"]), f"{r['jobs_succeeded']}/{r['jobs_total']}",
                      str(r["bars_fetched"]), str(r["bars_written"]), str(r["requests"]), _v(r["error"]))
    out.print(table)


def metrics(doc: dict[str, Any]) -> None:
    for section in ("fetch_pipeline", "compute_pipeline", "data_quality"):
        table = Table(title=f"{section} (last {doc['window_hours']} h)", title_justify="left", show_header=False)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in doc[section].items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
            table.add_row(key, _v(value))
        out.print(table)


def verify(doc: dict[str, Any]) -> None:
    table = Table(title="verify", title_justify="left")
    for col in ("series", "bars", "ok", "issues", "max indicator diff", "detail"):
        table.add_column(col)
    for s in doc["series"]:
        details = [i["detail"] for i in s["issues"][:3]]
        diff, where = s.get("max_indicator_diff"), s.get("max_indicator_diff_at")
        if where and not s["ok"]:
            # Where the recompute disagrees most: the first thing to look at.
            details.append(where if diff is None else f"largest indicator difference: {where}")
        table.add_row(s["series"], str(s["bars"]), "[green]yes[/]" if s["ok"] else "[red]no[/]",
                      str(len(s["issues"])), _v(s.get("max_indicator_diff")),
                      "; ".join(details) or "-")
    out.print(table)
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
