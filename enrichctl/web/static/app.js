// The enrichctl dashboard: reads the JSON API every REFRESH_MS and draws it. Every text that
// comes from the server goes into the page through textContent, never innerHTML.
"use strict";

const REFRESH_MS = 10000;
const TOKEN_KEY = "enrichctl.token";
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function symbolLink(symbol, synthetic) {
  // The symbol's own page: its charts, issues and recent jobs.
  const cell = el("td");
  cell.append(el("a", symbol, { href: `/symbol/${encodeURIComponent(symbol)}` }));
  if (synthetic) cell.append(" ", syntheticMark());
  return cell;
}

function syntheticMark() {
  // Demo data must never pass for market data.
  return el("span", "demo", { class: "synthetic", title: "synthetic data from the demo provider, not market data" });
}

function markedCell(text, synthetic) {
  const cell = el("td", text);
  if (synthetic) cell.append(" ", syntheticMark());
  return cell;
}

function statusCell(status) {
  return el("td", status, { "data-status": status });
}

function replaceRows(tableId, rows) {
  document.querySelector(`#${tableId} tbody`).replaceChildren(...rows);
}

function age(seconds) {
  if (seconds === null || !isFinite(seconds)) return "—";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function message(text, isError) {
  const out = document.getElementById("message");
  out.textContent = text;
  out.dataset.status = isError ? "error" : "succeeded";
}

async function post(path, params, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const query = params.toString();
  const response = await fetch(`${API}/${path}${query ? "?" + query : ""}`, {
    method: "POST", headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const doc = await response.json();
  if (!response.ok) throw new Error(`${response.status}: ${doc.detail || doc.error}`);
  return doc;
}

function drawOverview(overview) {
  replaceRows("symbols", overview.processing_symbols.map((s) => row([
    symbolLink(s.symbol, s.synthetic), s.asset_class, statusCell(s.status), when(s.last_bar),
    s.quality_score === null ? "—" : s.quality_score.toFixed(3), s.attempts, s.last_error || "",
  ])));
  const t = overview.totals;
  document.getElementById("totals").textContent =
    `${t.symbols} symbols · ${t.series} series · ${t.bars.toLocaleString()} bars · ` +
    `${t.succeeded} succeeded · ${t.failed} failed · ${t.stale} stale · ${t.never_run} never run`;
  const synthetic = document.getElementById("synthetic");
  synthetic.hidden = !t.synthetic_series;
  synthetic.textContent = t.synthetic_series
    ? `${t.synthetic_series} of ${t.series} series hold synthetic data from the demo provider, not market data`
    : "";
  const scheduler = document.getElementById("scheduler");
  const sched = overview.scheduler;
  scheduler.dataset.status = sched.paused ? "paused" : "succeeded";
  scheduler.textContent = sched.paused
    ? `paused since ${when(sched.paused_since)}${sched.paused_reason ? ": " + sched.paused_reason : ""}`
    : (overview.active_run ? `run ${overview.active_run.run_id} running` : "scheduler active");
  drawStaleness(overview);
}

function drawStaleness(overview) {
  const now = Date.now();
  const series = [];
  for (const s of overview.processing_symbols) {
    for (const ser of s.series) {
      const seconds = ser.last_bar ? (now - Date.parse(ser.last_bar)) / 1000 : null;
      series.push({ name: `${s.symbol}/${ser.timeframe}`, lastBar: ser.last_bar, seconds, stale: ser.stale });
    }
  }
  const longest = Math.max(1, ...series.map((x) => x.seconds || 0));
  replaceRows("staleness", series.map((x) => {
    const bar = el("div", null, { class: x.stale ? "age-bar stale" : "age-bar" });
    // Log scale: a day-old and a year-old series both stay visible.
    bar.style.width = `${(100 * Math.log1p(x.seconds || 0)) / Math.log1p(longest)}%`;
    const cell = el("td");
    cell.append(bar);
    const ageCell = el("td", `${age(x.seconds)}${x.stale ? " (stale)" : ""}`,
      { "data-status": x.stale ? "stale" : "fresh" });
    return row([x.name, when(x.lastBar), ageCell, cell]);
  }));
}

function drawHealth(health) {
  const badge = document.getElementById("health");
  badge.dataset.status = health.status;
  badge.textContent = health.status;
  document.getElementById("issues").replaceChildren(...health.issues.map((line) => el("li", line)));
}

function drawRuns(history) {
  replaceRows("runs", history.runs.map((r) => row([
    markedCell(r.run_id, r.synthetic), r.trigger, statusCell(r.status), when(r.started_at),
    r.duration_s === null ? "—" : `${r.duration_s} s`, `${r.jobs_succeeded} / ${r.jobs_failed}`,
    r.bars_written.toLocaleString(), r.error || "",
  ])));
  drawChart(history.runs.slice().reverse());
}

function drawChart(runs) {
  const chart = document.getElementById("chart");
  const width = 640, height = 160, bottom = 20;
  const most = Math.max(1, ...runs.map((r) => r.bars_written));
  const step = Math.min(40, runs.length ? width / runs.length : width);
  const shapes = [];
  runs.forEach((r, i) => {
    const h = ((height - bottom) * r.bars_written) / most;
    const rect = svg("rect", {
      x: i * step + 1, y: height - bottom - h, width: Math.max(step - 2, 1), height: Math.max(h, 1),
      class: r.status === "failed" ? "failed" : "",
    });
    const title = svg("title");
    title.textContent = `run ${r.run_id} (${r.status}): ${r.bars_written} bars written`;
    rect.append(title);
    const label = svg("text", { x: i * step + step / 2, y: height - 6, "text-anchor": "middle" });
    label.textContent = String(r.run_id);
    shapes.push(rect, label);
  });
  chart.replaceChildren(...shapes);
}

async function refresh() {
  try {
    const [overview, health, history] = await Promise.all([
      getJson(`${API}/dashboard/overview`), getJson(`${API}/dashboard/health`),
      getJson(`${API}/history?limit=20`),
    ]);
    drawOverview(overview);
    drawHealth(health);
    drawRuns(history);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    message(`refresh failed: ${error.message}`, true);
  }
}

async function act(label, path, params, body) {
  try {
    const doc = await post(path, params, body);
    message(label(doc), false);
  } catch (error) {
    message(error.message, true);
  }
  await refresh();
}

function start() {
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token.value));
  document.getElementById("trigger").addEventListener("click", () => {
    const params = new URLSearchParams();
    const text = document.getElementById("trigger-symbols").value;
    for (const symbol of text.split(/[\s,]+/).filter(Boolean)) params.append("symbols", symbol);
    act((doc) => `run ${doc.run_id} started (${doc.jobs} jobs)`, "trigger", params);
  });
  document.getElementById("pause").addEventListener("click", () => {
    const reason = document.getElementById("pause-reason").value.trim();
    act(() => "paused", "pause", new URLSearchParams(), reason ? { reason } : {});
  });
  document.getElementById("resume").addEventListener("click", () => {
    act((doc) => (doc.was_paused ? "resumed" : "was not paused"), "resume", new URLSearchParams());
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
