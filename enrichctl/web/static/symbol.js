// The symbol page: one chart per stored series (TradingView Lightweight Charts, vendored), with
// volume, chosen indicators and the recorded quality issues marked on the time axis; then the
// series' figures, the issues and the recent jobs. Server text goes in through textContent only.
"use strict";

const MAX_POINTS = 3000; // more bars than this in a range: the server merges them into buckets
const DAY_S = 86400;
const RANGES = [["1D", 1], ["1W", 7], ["1M", 31], ["3M", 92], ["1Y", 366], ["5Y", 1827], ["All", null]];
// Indicators drawn on the price scale; the others (RSI, ATR, MACD, ...) get a scale of their own.
const ON_PRICE = /^(sma|ema|wma|dema|tema|kama|trima|bb_|vwap)/;
const COLOURS = ["#0969da", "#8250df", "#bf8700", "#1a7f37", "#cf222e", "#57606a", "#e16f24", "#116329"];

const state = {
  symbol: null, job: null, timeframe: null, range: "1Y", style: "candles",
  indicators: new Set(), available: null, doc: null, loads: 0,
  chart: null, main: null, volume: null, lines: new Map(),
};
window.enrichctlSymbolPage = state; // read by the browser test and handy in a console

function message(text, isError) {
  const out = document.getElementById("message");
  out.textContent = text;
  out.dataset.status = isError ? "error" : "";
}

function seconds(iso) {
  return Math.floor(Date.parse(iso) / 1000);
}

function duration(ms) {
  const s = ms / 1000;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < DAY_S) return `${+(s / 3600).toFixed(1)} h`;
  return `${+(s / DAY_S).toFixed(1)} days`;
}

// --- the chart --------------------------------------------------------------------------------

function chartCreate() {
  const intraday = !/^1[dw]$/.test(state.timeframe);
  if (state.chart) state.chart.remove();
  const container = document.getElementById("chart");
  state.chart = LightweightCharts.createChart(container, {
    autoSize: true,
    layout: { background: { color: "#ffffff" }, textColor: "#1f2328" },
    timeScale: { timeVisible: intraday, secondsVisible: false, rightOffset: 2 },
    rightPriceScale: { scaleMargins: { top: 0.08, bottom: 0.28 } },
    crosshair: { mode: LightweightCharts.CrosshairMode.Normal },
  });
  state.chart.subscribeCrosshairMove(legendShow);
  state.main = null;
  state.volume = null;
  state.lines = new Map();
}

function mainSeriesSet(points) {
  if (state.main) state.chart.removeSeries(state.main);
  state.main = state.style === "candles"
    ? state.chart.addCandlestickSeries({ priceLineVisible: false })
    : state.chart.addLineSeries({ color: "#0969da", lineWidth: 2, priceLineVisible: false });
  state.main.setData(state.style === "candles" ? points.candles : points.closes);
}

function chartDraw() {
  const doc = state.doc;
  const points = { candles: [], closes: [], volumes: [] };
  for (const bar of doc.bars) {
    const time = bar.ts / 1000;
    points.candles.push({ time, open: bar.open, high: bar.high, low: bar.low, close: bar.close });
    points.closes.push({ time, value: bar.close });
    if (bar.volume !== null) {
      points.volumes.push({ time, value: bar.volume,
        color: bar.close >= bar.open ? "rgba(38,166,154,0.45)" : "rgba(239,83,80,0.45)" });
    }
  }
  chartCreate();
  mainSeriesSet(points);
  if (points.volumes.length) {
    state.volume = state.chart.addHistogramSeries({
      priceScaleId: "volume", priceFormat: { type: "volume" }, lastValueVisible: false,
      priceLineVisible: false });
    state.chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.78, bottom: 0 } });
    state.volume.setData(points.volumes);
  }
  doc.indicators.forEach((name, i) => {
    const onPrice = ON_PRICE.test(name);
    const line = state.chart.addLineSeries({
      color: COLOURS[i % COLOURS.length], lineWidth: 1, title: name, priceLineVisible: false,
      lastValueVisible: false, priceScaleId: onPrice ? "right" : "indicators" });
    if (!onPrice) {
      state.chart.priceScale("indicators").applyOptions({ scaleMargins: { top: 0.74, bottom: 0.02 } });
    }
    line.setData(doc.bars.filter((b) => b[name] !== null).map((b) => ({ time: b.ts / 1000, value: b[name] })));
    state.lines.set(name, line);
  });
  markersSet();
  state.chart.timeScale().fitContent();
}

// Each issue is marked on the first drawn bar at or after its time (a gap: the bar after it).
function markersSet() {
  const times = state.doc.bars.map((b) => b.ts / 1000);
  const markers = [];
  for (const issue of state.doc.issues) {
    if (!issue.at || !times.length) continue;
    const at = seconds(issue.at);
    let i = times.findIndex((t) => t >= at);
    if (i < 0) i = times.length - 1;
    const gap = issue.kind === "gap";
    markers.push({
      time: times[i], position: gap ? "belowBar" : "aboveBar",
      shape: gap ? "arrowUp" : "circle", color: issue.severity === "error" ? "#cf222e" : "#bf8700",
      text: gap ? "gap" : issue.kind, id: `${issue.kind}@${issue.at}`,
    });
  }
  markers.sort((a, b) => a.time - b.time);
  state.markers = markers;
  state.main.setMarkers(markers);
}

function legendShow(param) {
  const legend = document.getElementById("legend");
  const bar = param && param.time !== undefined ? state.doc.bars.find((b) => b.ts / 1000 === param.time) : null;
  if (!bar) {
    legend.textContent = `${state.symbol} ${state.timeframe} · times in UTC`;
    return;
  }
  const extra = state.doc.indicators.map((n) => `${n} ${bar[n] === null ? "—" : +bar[n].toFixed(4)}`);
  legend.textContent = [when(bar.time), `O ${bar.open}`, `H ${bar.high}`, `L ${bar.low}`, `C ${bar.close}`,
    `V ${bar.volume === null ? "—" : bar.volume.toLocaleString()}`, ...extra].join("  ");
}

// --- data -------------------------------------------------------------------------------------

function currentSeries() {
  return state.job.series.find((s) => s.timeframe === state.timeframe);
}

async function barsLoad() {
  const series = currentSeries();
  const params = new URLSearchParams({ max_points: String(MAX_POINTS) });
  const days = RANGES.find(([name]) => name === state.range)[1];
  if (days !== null && series.last_bar) {
    params.set("start", new Date(Date.parse(series.last_bar) - days * DAY_S * 1000).toISOString());
  }
  if (state.indicators.size) params.set("indicators", [...state.indicators].join(","));
  const path = `${API}/series/${encodeURIComponent(state.symbol)}/${state.timeframe}/bars?${params}`;
  try {
    state.doc = await getJson(path);
  } catch (error) {
    message(`could not load ${state.symbol}/${state.timeframe}: ${error.message}`, true);
    return;
  }
  if (state.available === null) indicatorsOffer(state.doc.available_indicators);
  chartDraw();
  noteShow();
  issuesShow();
  legendShow(null);
  state.loads += 1;
}

function noteShow() {
  const doc = state.doc;
  const shown = doc.bucket_ms
    ? `${doc.count.toLocaleString()} candles of ${duration(doc.bucket_ms)} each (choose a shorter range for every bar)`
    : `every bar shown`;
  const marked = state.markers.length;
  document.getElementById("chart-note").textContent =
    `${doc.total.toLocaleString()} bars in the range · ${shown} · ${marked} issue${marked === 1 ? "" : "s"} marked`;
}

function issuesShow() {
  const rows = state.doc.issues.map((i) => row([
    when(i.at), i.kind, el("td", i.severity, { "data-status": i.severity === "error" ? "error" : "degraded" }),
    i.detail, i.run_id === null ? "—" : i.run_id,
  ]));
  document.querySelector("#issues-table tbody").replaceChildren(...rows);
}

// --- controls and tables ---------------------------------------------------------------------

function pressed(group, current, attr) {
  for (const button of group.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset[attr] === current));
  }
}

function buttons(container, items, attr, current, onPick) {
  container.replaceChildren(...items.map((value) => el("button", value, { type: "button", [`data-${attr}`]: value })));
  pressed(container, current, attr);
  container.addEventListener("click", (event) => {
    const value = event.target.dataset && event.target.dataset[attr];
    if (!value) return;
    pressed(container, value, attr);
    onPick(value);
  });
}

function indicatorsOffer(names) {
  state.available = names;
  const box = document.getElementById("indicators");
  box.replaceChildren(...names.map((name) => {
    const label = el("label");
    const input = el("input", null, { type: "checkbox", value: name });
    input.addEventListener("change", () => {
      if (input.checked) state.indicators.add(name); else state.indicators.delete(name);
      barsLoad();
    });
    label.append(input, ` ${name}`);
    return label;
  }));
}

function freshnessCell(s) {
  // A delisted ticker is finished, not stale: it says so instead.
  const state = s.delisted ? "delisted" : (s.stale ? "stale" : "fresh");
  return el("td", state, { "data-status": state });
}

function tablesShow(job) {
  document.getElementById("title").textContent = job.symbol;
  const status = document.getElementById("status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  document.getElementById("asset-class").textContent = job.asset_class;
  document.querySelector("#series tbody").replaceChildren(...job.series.map((s) => row([
    `${job.symbol}/${s.timeframe}`, when(s.first_bar), when(s.last_bar), s.bars.toLocaleString(),
    s.quality_score === null ? "—" : s.quality_score.toFixed(3), s.issues,
    freshnessCell(s),
    `${s.provider}${s.synthetic ? " (synthetic)" : ""}`, s.last_error || "",
  ])));
  document.querySelector("#actions tbody").replaceChildren(...(job.corporate_actions || []).map((a) => row([
    a.ex_date, a.kind, a.description,
  ])));
  document.getElementById("adjustment").textContent = job.adjustment || "";
  document.querySelector("#jobs tbody").replaceChildren(...job.recent_jobs.map((j) => row([
    j.run_id, el("td", j.status, { "data-status": j.status }), j.attempts, when(j.started_at),
    j.duration_ms === null ? "—" : `${(j.duration_ms / 1000).toFixed(1)} s`,
    `${j.bars_fetched} / ${j.bars_written}`, j.error || "",
  ])));
}

async function start() {
  state.symbol = decodeURIComponent(location.pathname.split("/").pop());
  document.title = `enrichctl · ${state.symbol}`;
  try {
    state.job = await getJson(`${API}/dashboard/job-status/${encodeURIComponent(state.symbol)}`);
  } catch (error) {
    document.getElementById("title").textContent = state.symbol;
    message(error.message, true);
    return;
  }
  tablesShow(state.job);
  if (!state.job.series.length) {
    message("no bars stored for this symbol yet", true);
    return;
  }
  const timeframes = state.job.series.map((s) => s.timeframe);
  state.timeframe = timeframes.includes("1d") ? "1d" : timeframes[0];
  buttons(document.getElementById("timeframes"), timeframes, "timeframe", state.timeframe, (tf) => {
    state.timeframe = tf;
    barsLoad();
  });
  buttons(document.getElementById("ranges"), RANGES.map(([name]) => name), "range", state.range, (range) => {
    state.range = range;
    barsLoad();
  });
  const styles = document.querySelector("[aria-label='Chart type']");
  styles.addEventListener("click", (event) => {
    const style = event.target.dataset && event.target.dataset.style;
    if (!style || !state.doc) return;
    state.style = style;
    pressed(styles, style, "style");
    chartDraw();
  });
  await barsLoad();
}

document.addEventListener("DOMContentLoaded", start);
