"""The symbol page of ``serve`` in a real headless Chromium: reached from the dashboard's symbol
link, it must draw a chart (pixels of the candle colours on its canvas) whose points are the
stored bars, overlay a chosen indicator with the stored values, and mark a recorded issue on
the time axis, with no script, CSP or network error (the charting library is served locally).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from .test_browser import Served, chromium, chromium_exe, eventually, server  # noqa: F401 - fixtures

PAGE = "window.enrichctlSymbolPage"
# Pixels of lightweight-charts' default up and down candle colours on the chart's canvases.
CANDLE_PIXELS = """(() => {
  let up = 0, down = 0;
  for (const canvas of document.querySelectorAll('#chart canvas')) {
    if (!canvas.width || !canvas.height) continue;
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
      if (Math.abs(r - 38) < 6 && Math.abs(g - 166) < 6 && Math.abs(b - 154) < 6) up++;
      if (Math.abs(r - 239) < 6 && Math.abs(g - 83) < 6 && Math.abs(b - 80) < 6) down++;
    }
  }
  return {up, down};
})()"""


async def _loads_reach(page: Any, n: int) -> None:
    await eventually(lambda: page.evaluate(f"{PAGE} && {PAGE}.loads >= {n}"), f"chart load {n}")


async def test_the_symbol_page_charts_the_stored_bars_with_an_indicator_and_the_issues(
    chromium_exe: str, server: Served, tmp_path: Path  # noqa: F811 - the fixtures imported above
) -> None:
    base, ws = server.url, server.workspace
    stored = ws.query("SELECT ts, open, high, low, close, volume FROM bars "
                      "WHERE symbol = 'AAPL' AND timeframe = '1d' ORDER BY ts")
    sma = ws.query("SELECT ts, sma_20 FROM indicators WHERE symbol = 'AAPL' AND timeframe = '1d' "
                   "AND sma_20 IS NOT NULL ORDER BY ts")
    gap_at = stored[100][0]
    # An issue a run recorded: the page must mark it on the time axis and list it.
    ws.execute("INSERT INTO quality_issues (run_id, symbol, timeframe, kind, severity, ts, detail, created_at) "
               "VALUES (NULL, 'AAPL', '1d', 'gap', 'warning', ?, '1 session missing: test', 0)", (gap_at,))
    async with aiohttp.ClientSession() as http:
        async def listening() -> bool:
            try:
                async with http.get(f"{base}/api/v1/enrichment/dashboard/overview") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await eventually(listening, "enrichctl serve to listen", timeout=30)

    async with chromium(chromium_exe, tmp_path) as page:
        await page.devtools.send("Page.navigate", {"url": f"{base}/"}, page.session)
        link = "#symbols a[href='/symbol/AAPL']"
        await eventually(lambda: page.evaluate(f"!!document.querySelector({json.dumps(link)})"),
                         "the dashboard to link AAPL")
        await page.click(link)
        await _loads_reach(page, 1)
        assert await page.evaluate("location.pathname") == "/symbol/AAPL"

        await page.click("#ranges button[data-range='All']")
        await _loads_reach(page, 2)
        candles = await page.evaluate(f"{PAGE}.main.data()")
        assert [(c["time"] * 1000, c["open"], c["high"], c["low"], c["close"]) for c in candles] == \
            [row[:5] for row in stored]
        volumes = await page.evaluate(f"{PAGE}.volume.data()")
        assert [(v["time"] * 1000, v["value"]) for v in volumes] == [(row[0], row[5]) for row in stored]
        pixels = await eventually(
            lambda: page.evaluate(f"(() => {{ const p = {CANDLE_PIXELS}; return p.up > 50 && p.down > 50 ? p : null; }})()"),
            "candles drawn on the canvas")
        assert pixels["up"] > 50 and pixels["down"] > 50

        marker = await page.evaluate(f"{PAGE}.markers")
        assert [(m["time"] * 1000, m["text"]) for m in marker] == [(gap_at, "gap")]
        note = await page.evaluate("document.getElementById('chart-note').textContent")
        assert f"{len(stored)} bars in the range" in note and "every bar shown" in note and "1 issue marked" in note
        assert "1 session missing: test" in await page.evaluate("document.querySelector('#issues-table').innerText")

        await page.click("#indicators input[value='sma_20']")
        await _loads_reach(page, 3)
        line = await page.evaluate(f"{PAGE}.lines.get('sma_20').data()")
        assert [(p["time"] * 1000, p["value"]) for p in line] == sma

        await page.click("[data-style='line']")
        await eventually(lambda: page.evaluate(f"{PAGE}.main.seriesType() === 'Line'"), "the line chart")
        closes = await page.evaluate(f"{PAGE}.main.data()")
        assert [(p["time"] * 1000, p["value"]) for p in closes] == [(row[0], row[4]) for row in stored]

        figures = await page.evaluate("document.querySelector('#series').innerText")
        assert "AAPL/1d" in figures and f"{len(stored):,}" in figures
        jobs = await page.evaluate("document.querySelectorAll('#jobs tbody tr').length")
        assert jobs >= 1
        assert page.errors() == [], "\n".join(page.errors())
