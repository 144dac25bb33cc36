"""The OpenAPI 3.1 description of ``serve``, served at ``/openapi.json``.

Kept true by ``tests/integration/test_web_openapi.py``, which fuzzes the live app against it.
Document schemas name the fields clients rely on and allow more, so a field added in
``dashboard.py`` does not make the description false. Bounds come from ``web.params``.
"""

from __future__ import annotations

from typing import Any

from enrichctl.domain import AssetClass, RunStatus, Timeframe
from enrichctl.web.params import (
    HISTORY_DEFAULT,
    HISTORY_MAX,
    REASON_MAX,
    SYMBOL_PATTERN,
    TRIGGER_MAX_SYMBOLS,
)
from enrichctl.web.seriesbars import LIMIT_DEFAULT, LIMIT_MAX, POINTS_MIN

API = "/api/v1/enrichment"  # every JSON endpoint is under it (server.py routes from this)
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required),
            "properties": {**required, **(optional or {})}}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
INSTANT = {"type": "string", "format": "date-time"}
N_STR, N_INT, N_NUM, N_INSTANT = (_nullable(s) for s in (STR, INT, NUM, INSTANT))
COUNT = {"type": "integer", "minimum": 0}

RUN = _obj({
    "run_id": INT, "trigger": {"enum": ["cli", "timer", "api"]},
    "status": {"enum": [s.value for s in RunStatus]}, "provider": STR, "synthetic": BOOL,
    "started_at": INSTANT, "finished_at": N_INSTANT, "duration_s": N_NUM, "jobs_total": COUNT,
    "jobs_succeeded": COUNT, "jobs_failed": COUNT, "bars_fetched": COUNT, "bars_written": COUNT,
    "requests": COUNT, "host": STR, "pid": INT, "error": N_STR,
})
SERIES = _obj({
    "timeframe": STR, "first_bar": N_INSTANT, "last_bar": N_INSTANT, "bars": COUNT,
    "last_success": N_INSTANT, "last_attempt": N_INSTANT, "last_error": N_STR,
    "quality_score": N_NUM, "issues": COUNT, "stale": BOOL, "provider": STR, "synthetic": BOOL,
    "delisted": BOOL, "delisted_at": N_INSTANT,
})
SYMBOL_FIELDS = {
    "symbol": STR, "asset_class": {"enum": [a.value for a in AssetClass]}, "status": STR,
    "last_bar": N_INSTANT, "last_success": N_INSTANT, "attempts": COUNT, "last_error": N_STR,
    "quality_score": N_NUM, "stale": BOOL, "delisted": BOOL, "last_run_id": N_INT, "provider": N_STR,
    "synthetic": BOOL, "series": {"type": "array", "items": _ref("Series")},
}
SCHEDULER = _obj({"paused": BOOL, "paused_reason": N_STR, "paused_by": N_STR, "paused_since": N_STR})
OVERVIEW = _obj({
    "generated_at": INSTANT, "scheduler": _ref("Scheduler"), "last_run": _nullable(_ref("Run")),
    "active_run": _nullable(_ref("Run")), "abandoned_runs": {"type": "array", "items": _ref("Run")},
    "totals": _obj({k: COUNT for k in ("symbols", "series", "bars", "succeeded", "failed",
                                       "never_run", "stale", "synthetic_series")}),
    "processing_symbols": {"type": "array", "items": _ref("Symbol")},
    "resilience": _nullable({"type": "object"}),
})
REASON = _obj({"severity": {"enum": ["unhealthy", "degraded"]}, "kind": STR, "symbol": N_STR,
               "timeframe": N_STR, "message": STR})
HEALTH = _obj({"status": {"enum": ["healthy", "degraded", "unhealthy"]}, "generated_at": N_INSTANT,
               "issues": {"type": "array", "items": STR}, "reasons": {"type": "array", "items": REASON}})
JOB = _obj({"run_id": INT, "status": STR, "attempts": COUNT, "started_at": N_INSTANT,
            "finished_at": N_INSTANT, "duration_ms": N_NUM, "bars_fetched": COUNT,
            "bars_written": COUNT, "error": N_STR})
ISSUE = _obj({"timeframe": STR, "kind": STR, "severity": {"enum": ["warning", "error"]},
              "at": N_INSTANT, "detail": STR, "run_id": N_INT, "recorded_at": INSTANT})
JOB_STATUS = _obj({**SYMBOL_FIELDS, "generated_at": INSTANT,
                   "recent_jobs": {"type": "array", "items": _ref("Job")},
                   "recent_issues": {"type": "array", "items": _ref("Issue")},
                   "corporate_actions": {"type": "array", "items": _ref("CorporateAction")},
                   "adjustment": STR})
ACTION = _obj({"kind": {"enum": ["split", "dividend"]}, "ex_date": {"type": "string", "format": "date"},
               "ratio": N_NUM, "amount": N_NUM, "description": STR})
HISTORY = _obj({"limit": {"type": "integer", "minimum": 1, "maximum": HISTORY_MAX}, "count": COUNT,
                "runs": {"type": "array", "items": _ref("Run")}})
RATE = _nullable({"type": "number", "minimum": 0, "maximum": 1})
METRICS = _obj({
    "generated_at": INSTANT, "window_hours": INT,
    "fetch_pipeline": _obj({"total_requests": COUNT, "successful_requests": COUNT,
                            "failed_requests": COUNT, "success_rate": RATE,
                            "avg_response_time_ms": N_NUM, "records_fetched": COUNT,
                            "records_inserted": COUNT, "api_quota_remaining": N_INT,
                            "api_quota_basis": STR, "api_quota_limit": N_INT,
                            "api_quota_effective_rate": N_INT, "api_quota_refused": COUNT,
                            "api_quota_last_refused_at": N_INSTANT}),
    "compute_pipeline": _obj({"total_computations": COUNT, "successful_computations": COUNT,
                              "success_rate": RATE, "avg_computation_time_ms": N_NUM,
                              "features_computed": COUNT}),
    "data_quality": _obj({"records_validated": COUNT, "validation_rate": RATE,
                          "gaps_detected": COUNT, "anomalies_detected": COUNT,
                          "issues_by_kind": {"type": "object", "additionalProperties": COUNT},
                          "quality_score": N_NUM,
                          "series_by_provider": {"type": "object", "additionalProperties": COUNT},
                          "synthetic_series": COUNT}),
})
ERROR = _obj({"error": STR, "detail": STR})
PAUSED = _obj({"paused": {"const": True}, "reason": N_STR, "by": STR, "since": STR})
RESUMED = _obj({"paused": {"const": False}, "was_paused": BOOL})
ACCEPTED = _obj({"run_id": INT, "status": STR, "jobs": COUNT,
                 "symbols": _nullable({"type": "array", "items": STR})})

BAR = {"type": "object", "required": ["ts", "time", "open", "high", "low", "close", "volume", "vwap", "trades"],
       "properties": {"ts": INT, "time": INSTANT, "open": NUM, "high": NUM, "low": NUM, "close": NUM,
                      "volume": N_NUM, "vwap": N_NUM, "trades": N_INT},
       "additionalProperties": N_NUM}  # the indicator columns asked for
BARS = _obj({
    "symbol": STR, "timeframe": STR, "start": N_INSTANT, "end": N_INSTANT, "total": COUNT,
    "count": COUNT, "bucket_ms": _nullable({"type": "integer", "minimum": 1}), "next_start": N_INSTANT,
    "indicators": {"type": "array", "items": STR}, "available_indicators": {"type": "array", "items": STR},
    "issues": {"type": "array", "items": _obj({"kind": STR, "severity": STR, "at": N_INSTANT,
                                               "detail": STR, "run_id": N_INT})},
    "bars": {"type": "array", "items": _ref("Bar")},
})

SCHEMAS = {
    "Run": RUN, "Series": SERIES, "Symbol": _obj(SYMBOL_FIELDS), "Scheduler": SCHEDULER,
    "Overview": OVERVIEW, "Health": HEALTH, "Job": JOB, "Issue": ISSUE, "JobStatus": JOB_STATUS,
    "CorporateAction": ACTION, "History": HISTORY, "Metrics": METRICS, "Error": ERROR, "Paused": PAUSED, "Resumed": RESUMED,
    "TriggerAccepted": ACCEPTED, "Bar": BAR, "Bars": BARS,
}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Invalid parameter or body.", 401: "Missing or wrong bearer token.",
            403: "Cross-origin request refused.", 404: "Unknown symbol.",
            408: "The body did not arrive within serve.idle_timeout_seconds.",
            409: "Another run is active.", 413: "Body larger than 64 KiB.",
            415: "Body is not application/json.",
            503: "The database is unavailable, or every connection is busy (too_many_connections)."}
    out = {str(s): _json(text[s], "Error") for s in statuses}
    out["421"] = _json("The Host header names no host this server answers for (DNS rebinding; "
                       "see serve.allowed_hosts).", "Error")
    out["500"] = _json("Unexpected server error (generic message; details in the server log).", "Error")
    return out


def _get(summary: str, ok: dict[str, Any], *errors: int, parameters: list | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**_errors(503, *errors), **ok}}
    if parameters:
        op["parameters"] = parameters
    return {"get": op}


def _post(summary: str, ok: dict[str, Any], token_required: bool, *errors: int,
          parameters: list | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    statuses = (400, 403, 503, *errors, *((401,) if token_required else ()))
    op: dict[str, Any] = {"summary": summary, "responses": {**ok, **_errors(*statuses)}}
    if token_required:
        op["security"] = [{"bearerAuth": []}]
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    return {"post": op}


def _bars_parameters(symbol: dict[str, Any], indicators: tuple[str, ...]) -> list[dict[str, Any]]:
    when = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
    names = {"enum": list(indicators)} if indicators else {"type": "string", "pattern": "^$"}
    return [
        {"name": "symbol", "in": "path", "required": True, "schema": symbol},
        {"name": "timeframe", "in": "path", "required": True,
         "schema": {"enum": [t.value for t in Timeframe]}},
        {"name": "start", "in": "query", "required": False, "schema": when,
         "description": "First bar time, inclusive (a date: from its start, UTC)."},
        {"name": "end", "in": "query", "required": False, "schema": when,
         "description": "Last bar time, inclusive (a date: to its end, UTC). Not before start."},
        {"name": "indicators", "in": "query", "required": False, "style": "form", "explode": False,
         "description": "Stored indicator columns to add to each row, comma-separated.",
         "schema": {"type": "array", "items": names}},
        {"name": "limit", "in": "query", "required": False,
         "description": "Rows per page; next_start says where the next page begins.",
         "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": LIMIT_DEFAULT}},
        {"name": "max_points", "in": "query", "required": False,
         "description": "When the range holds more bars, merge them into time buckets (bucket_ms) "
                        "so that at most this many rows (and at most limit) come back.",
         "schema": {"type": "integer", "minimum": POINTS_MIN, "maximum": LIMIT_MAX}},
    ]


def document(token_required: bool, indicators: tuple[str, ...] = ()) -> dict[str, Any]:
    """The description of this server; POSTs list the bearer scheme when a token is configured;
    ``indicators`` are the stored indicator columns the bars endpoint accepts."""
    symbol = {"type": "string", "pattern": SYMBOL_PATTERN, "maxLength": 22}
    paths = {
        "/": {"get": {"summary": "The HTML dashboard.", "responses": {
            "200": {"description": "Page", "content": {"text/html": {"schema": STR}}}, **_errors()}}},
        "/symbol/{symbol}": {"get": {
            "summary": "The HTML page of one symbol: charts of its series, issues, recent jobs.",
            "parameters": [{"name": "symbol", "in": "path", "required": True, "schema": symbol}],
            "responses": {"200": {"description": "Page", "content": {"text/html": {"schema": STR}}},
                          **_errors(400)}}},
        "/openapi.json": {"get": {"summary": "This document.", "responses": {
            "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}},
            **_errors()}}},
        "/metrics": _get("Prometheus text exposition.", {"200": {
            "description": "Metrics", "content": {"text/plain": {"schema": STR}}}}),
        f"{API}/dashboard/overview": _get("Where every symbol stands (= status --json).",
                                          {"200": _json("Overview", "Overview")}, 400),
        f"{API}/dashboard/health": _get(
            "healthy, degraded or unhealthy, with the reasons.",
            {"200": _json("Healthy or degraded", "Health"), "503": {
                "description": "Unhealthy (the health document), or the database is unavailable (an error)",
                "content": {JSON: {"schema": {"anyOf": [_ref("Health"), _ref("Error")]}}}}}, 400),
        f"{API}/dashboard/metrics": _get("Fetch, compute and quality metrics (= metrics --json).",
                                         {"200": _json("Metrics", "Metrics")}, 400),
        f"{API}/dashboard/job-status/{{symbol}}": _get(
            "One symbol: its series, recent jobs and issues (= status SYMBOL --json).",
            {"200": _json("Job status", "JobStatus")}, 400, 404,
            parameters=[{"name": "symbol", "in": "path", "required": True, "schema": symbol}]),
        f"{API}/history": _get(
            "Recent runs, newest first (= history --json).", {"200": _json("History", "History")}, 400,
            parameters=[{"name": "limit", "in": "query", "required": False, "schema": {
                "type": "integer", "minimum": 1, "maximum": HISTORY_MAX, "default": HISTORY_DEFAULT}}]),
        f"{API}/series/{{symbol}}/{{timeframe}}/bars": _get(
            "A stored series' bars (= export --format jsonl rows), paged or bucketed, with the "
            "chosen indicator columns and the quality issues recorded in the range.",
            {"200": _json("Bars", "Bars")}, 400, 404, parameters=_bars_parameters(symbol, indicators)),
        f"{API}/trigger": _post(
            "Start a run in the background (same lease rules as the CLI).",
            {"202": _json("Run started", "TriggerAccepted")}, token_required, 400, 409,
            parameters=[
                {"name": "symbols", "in": "query", "required": False, "style": "form", "explode": True,
                 "description": "Repeat for several; none = the configured universe.",
                 "schema": {"type": "array", "items": symbol, "maxItems": TRIGGER_MAX_SYMBOLS}},
                {"name": "asset_class", "in": "query", "required": False,
                 "schema": {"enum": [a.value for a in AssetClass]}},
            ]),
        f"{API}/pause": _post(
            "Pause timer runs until resume.", {"200": _json("Paused", "Paused")}, token_required,
            400, 408, 413, 415,
            parameters=[{"name": "reason", "in": "query", "required": False,
                         "description": "Used when there is no body.",
                         "schema": {"type": "string", "minLength": 1, "maxLength": REASON_MAX}}],
            body={"required": False, "content": {JSON: {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"reason": _nullable(
                    {"type": "string", "minLength": 1, "maxLength": REASON_MAX})}}}}}),
        f"{API}/resume": _post("Resume timer runs.", {"200": _json("Resumed", "Resumed")}, token_required),
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "enrichctl serve", "version": "1",
                 "description": "The enrichment dashboard API. State changes are POST only; "
                                "unknown query parameters are rejected with 400."},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if token_required:
        doc["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    return doc
