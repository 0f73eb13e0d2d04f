"""A headless Chromium driven over the Chrome DevTools Protocol, for tests that click.

Debian's Chromium is started with ``--remote-debugging-port=0``; the port it picked is read from
``DevToolsActivePort`` in its profile directory, and the page is driven through its websocket
with aiohttp's client (no new dependency): ``open`` a URL, ``evaluate`` JavaScript in the page
(``click`` and ``fill`` are small helpers on top). Exceptions the page throws and console errors
(a Content-Security-Policy violation included) are kept in ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from . import procs

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


class BrowserError(AssertionError):
    """The page threw while evaluating, or the browser did not answer."""


class Chromium:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.errors: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> Chromium:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, timeout: float = 30) -> None:
        profile = self.workdir / "cdp-profile"
        profile.mkdir(parents=True, exist_ok=True)
        active = profile / "DevToolsActivePort"
        active.unlink(missing_ok=True)
        with (self.workdir / "chromium.log").open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its group holds its helpers (zygote, renderers)
            )
        procs.track(self._proc.pid, "chromium")
        deadline = time.monotonic() + timeout
        while not (active.exists() and active.read_text().strip()):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                raise BrowserError(f"chromium did not start; see {self.workdir / 'chromium.log'}")
            await asyncio.sleep(0.05)
        port = int(active.read_text().splitlines()[0])
        self._session = aiohttp.ClientSession()
        targets: list[dict[str, Any]] = []
        while not targets:
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = [t for t in await resp.json() if t.get("type") == "page"]
            if not targets:
                await asyncio.sleep(0.05)
        self._ws = await self._session.ws_connect(
            targets[0]["webSocketDebuggerUrl"], max_msg_size=0
        )
        self._reader = asyncio.create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        await self.send("Page.enable")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._proc is not None:
            procs.release(self._proc.pid)

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            waiting = self._waiting.pop(doc.get("id", -1), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(doc)
            elif doc.get("method") == "Runtime.exceptionThrown":
                details = doc["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description", str(details)))
            elif doc.get("method") == "Log.entryAdded":
                entry = doc["params"]["entry"]
                if entry.get("level") == "error":
                    where = f" ({entry['url']})" if entry.get("url") else ""
                    self.errors.append(f"{entry.get('source')}: {entry.get('text')}{where}")
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(BrowserError("the browser closed the connection"))

    async def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """One protocol command; its ``result``."""
        assert self._ws is not None, "start() first"
        ident = next(self._ids)
        answer = self._waiting[ident] = asyncio.get_running_loop().create_future()
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        doc = await asyncio.wait_for(answer, timeout)
        if "error" in doc:
            raise BrowserError(f"{method}: {doc['error']}")
        result: dict[str, Any] = doc.get("result", {})
        return result

    async def open(self, url: str, timeout: float = 30) -> None:
        """Navigate to ``url`` and wait until the page has loaded."""
        await self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while await self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not load within {timeout}s")
            await asyncio.sleep(0.05)

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (awaited when it is a promise)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(details.get("exception", {}).get("description", str(details)))
        return result["result"].get("value")

    async def click(self, selector: str) -> None:
        """Click the element ``selector`` finds; fails when there is none."""
        found = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.click(); return true; })()"
        )
        if not found:
            raise BrowserError(f"nothing matches {selector}")

    async def fill(self, selector: str, value: str) -> None:
        """Set the value of the input ``selector`` finds."""
        await self.evaluate(
            f"document.querySelector({json.dumps(selector)}).value = {json.dumps(value)}"
        )

    async def text(self, selector: str) -> str | None:
        """The text of the element ``selector`` finds (``None`` when there is none)."""
        value = await self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent ?? null"
        )
        return None if value is None else str(value)
