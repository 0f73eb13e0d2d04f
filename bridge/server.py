"""The bridge's HTTP listener: the status page ``/`` (and ``/status.json``), ``/metrics``,
``/healthz`` (alive) and ``/readyz`` (in the consumer group and the ingress reachable)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import Metrics

log = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]
StatusSnapshot = Callable[[], dict[str, Any]]
PAGE = files("bridge").joinpath("status_page.html").read_bytes()


class StatusServer:
    def __init__(
        self,
        metrics: Metrics,
        readiness: Readiness,
        host: str,
        port: int,
        status: StatusSnapshot | None = None,
    ) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._status = status
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/status.json", self._status_json)
        app.router.add_get("/metrics", self._export)
        app.router.add_get("/healthz", self._alive)
        app.router.add_get("/readyz", self._ready)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:  # tests ask for any free port
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("status page, /metrics, /healthz, /readyz on http://%s:%d/", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", charset="utf-8")

    async def _status_json(self, request: web.Request) -> web.Response:
        if self._status is None:
            raise web.HTTPNotFound()
        return web.json_response(self._status(), dumps=lambda o: orjson.dumps(o).decode())

    async def _export(self, request: web.Request) -> web.Response:
        body = self._metrics.export()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _alive(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready, detail = self._readiness()
        return web.json_response(
            {"status": "ready" if ready else "not ready", "detail": detail},
            status=200 if ready else 503,
        )
