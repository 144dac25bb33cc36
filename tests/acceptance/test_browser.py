"""The ``serve`` dashboard in a real headless Chromium, driven over the DevTools protocol.

``enrichctl serve`` runs as a process on a copy of the filled database; the page must load with
no script error, show the symbols, and a click on "Trigger run" (with the token typed in) must
start a run that history records with trigger ``api``. Without a Chromium the test is skipped,
except under ``CI=true`` (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from needs import program

from .workspace import Workspace

T = TypeVar("T")
TOKEN = "browser-test-token"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--remote-debugging-port=0", "--no-sandbox", "--disable-gpu",
                  "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--no-default-browser-check", "--mute-audio")


@pytest.fixture
def chromium_exe() -> str:
    """The browser, looked up before anything costly is set up."""
    return program(*BROWSERS, install="apt-get install chromium")


class DevTools:
    """A minimal Chrome DevTools Protocol client over one browser websocket (flat sessions)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and (future := self._pending.pop(data["id"], None)) is not None:
                if not future.done():
                    future.set_result(data)
            else:
                self.events.append(data)
        for future in self._pending.values():
            future.set_exception(ConnectionError("the browser closed the DevTools connection"))

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self.ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise AssertionError(f"{method} failed: {reply['error']}")
        return reply["result"]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One tab: evaluate JavaScript, type, click where a user would."""

    def __init__(self, devtools: DevTools, session: str) -> None:
        self.devtools = devtools
        self.session = session

    async def evaluate(self, expression: str) -> Any:
        result = await self.devtools.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True}, self.session)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def type_into(self, selector: str, text: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.devtools.send("Input.insertText", {"text": text}, self.session)

    async def click(self, selector: str) -> None:
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.devtools.send("Input.dispatchMouseEvent", {
                "type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
                self.session)

    def errors(self) -> list[str]:
        """Script exceptions, console errors and browser-reported errors (CSP, 404s) so far."""
        found = []
        for event in self.devtools.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:300])
            elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(json.dumps(params.get("args", []))[:300])
            elif event.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                # /health answers 503 when unhealthy (this database is stale): data, not an error.
                if entry.get("url", "").endswith("/dashboard/health") and "503" in entry.get("text", ""):
                    continue
                found.append(f"{entry.get('text', '')} {entry.get('url', '')}"[:300])
        return found


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 20) -> T:
    """The first truthy value ``probe`` returns, polled; fails with ``what`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while not (value := await probe()):
                await asyncio.sleep(0.1)
            return value
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@asynccontextmanager
async def chromium(executable: str, tmp_path: Path) -> AsyncIterator[Page]:
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; reading and waiting run in threads
        [executable, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = await asyncio.wait_for(asyncio.to_thread(_devtools_url, proc), 60)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url, max_msg_size=0)
            devtools = DevTools(ws)
            try:
                target = await devtools.send("Target.createTarget", {"url": "about:blank"})
                attached = await devtools.send("Target.attachToTarget",
                                               {"targetId": target["targetId"], "flatten": True})
                page = Page(devtools, attached["sessionId"])
                for domain in ("Page", "Runtime", "Log"):
                    await devtools.send(f"{domain}.enable", session=page.session)
                yield page
            finally:
                await devtools.close()
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


def _devtools_url(proc: subprocess.Popen[str]) -> str:
    """Read Chromium's stderr until it prints its DevTools URL; keep draining it afterwards
    (a full pipe would block the browser)."""
    stderr = proc.stderr
    assert stderr is not None
    seen = []
    for line in stderr:
        seen.append(line)
        if match := re.search(r"DevTools listening on (ws://\S+)", line):
            threading.Thread(target=stderr.read, daemon=True).start()
            return match.group(1)
    raise AssertionError("Chromium exited before listening:\n" + "".join(seen[-20:]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Served:
    workspace: Workspace
    url: str


@pytest.fixture
def server(filled: Workspace, tmp_path: Path) -> Iterator[Served]:
    """``enrichctl serve`` on a copy of the filled database, with a token, as a process."""
    ws = filled.clone(tmp_path / "machine")
    port = _free_port()
    env = {**ws.env, "ENRICHCTL_PROVIDER": "demo", "ENRICHCTL_SERVE__TOKEN": TOKEN}
    proc = subprocess.Popen(
        [ws.exe, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=ws.root, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        yield Served(ws, f"http://127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        print(f"--- enrichctl serve output (exit {proc.returncode})\n{out}")
        assert TOKEN not in out, "the token must never be logged"


async def test_the_dashboard_shows_the_symbols_and_a_trigger_click_starts_a_run(
    chromium_exe: str, server: Served, tmp_path: Path
) -> None:
    base, ws = server.url, server.workspace
    api = f"{base}/api/v1/enrichment"
    async with aiohttp.ClientSession() as http:
        async def listening() -> bool:
            try:
                async with http.get(f"{api}/dashboard/overview") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await eventually(listening, "enrichctl serve to listen", timeout=30)
        runs_before = len(ws.query("SELECT id FROM runs"))

        async with chromium(chromium_exe, tmp_path) as page:
            await page.devtools.send("Page.navigate", {"url": f"{base}/"}, page.session)
            table = await eventually(
                lambda: page.evaluate("(() => { const t = document.querySelector('#symbols tbody');"
                                      " return t && /AAPL/.test(t.textContent) && /MSFT/.test(t.textContent)"
                                      " ? t.innerText : null; })()"),
                "the symbols table to show AAPL and MSFT")
            assert "succeeded" in table
            # The filled data is the demo provider's: every symbol and run says so, and a note.
            assert await page.evaluate("document.querySelectorAll('#symbols tbody .synthetic').length") == 2
            assert await eventually(
                lambda: page.evaluate("document.querySelectorAll('#runs tbody .synthetic').length"),
                "the runs table to mark the demo runs") >= 1
            banner = await page.evaluate("(() => { const b = document.getElementById('synthetic');"
                                         " return b.hidden ? null : b.textContent; })()")
            assert banner == "2 of 2 series hold synthetic data from the demo provider, not market data"
            assert await page.evaluate("document.querySelectorAll('#chart rect').length") >= 1
            assert await page.evaluate("document.getElementById('health').textContent") in (
                "healthy", "degraded", "unhealthy")

            await page.type_into("#token", TOKEN)
            await page.type_into("#trigger-symbols", "AAPL")
            await page.click("#trigger")
            note = await eventually(
                lambda: page.evaluate("document.getElementById('message').textContent"),
                "the page to confirm the trigger")
            match = re.fullmatch(r"run (\d+) started \(1 jobs\)", note)
            assert match, note
            run_id = int(match.group(1))
            assert page.errors() == []

        async def finished() -> dict[str, Any] | None:
            async with http.get(f"{api}/history", params={"limit": "5"}) as response:
                runs = (await response.json())["runs"]
            run = next((r for r in runs if r["run_id"] == run_id), None)
            return run if run and run["status"] != "running" else None

        run = await eventually(finished, f"run {run_id} to finish")
    assert run["trigger"] == "api" and run["status"] == "succeeded"
    assert ws.query("SELECT trigger FROM runs WHERE id = ?", (run_id,)) == [("api",)]
    assert len(ws.query("SELECT id FROM runs")) == runs_before + 1
