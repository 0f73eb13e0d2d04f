"""The bridge's HTTP listener: the status page ``/`` (and ``/status.json``), ``/metrics``,
``/healthz`` (alive), ``/readyz`` (in the consumer group and the ingress reachable) and the
operator's ``/admin/...`` endpoints (:mod:`bridge.operate.admin`, and ``POST /admin/reload``).

With a token (``[metrics] token_env`` / ``token_file``), every path but ``/healthz``,
``/metrics`` and the page itself answers 401 without ``Authorization: Bearer <token>``. The page
``/`` is a static file that holds no data: it asks for the token (or reads it from the URL's
``#token=`` fragment, which browsers never send) and sends it as that header. A token in a query
string would land in access logs, proxies and ``Referer`` headers, so none is accepted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .admin import MAX_BODY, Operations, add_admin_routes, answers, json_body, unknown_endpoint
from .metrics import Metrics

log = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]
StatusSnapshot = Callable[[], dict[str, Any]]
PAGE = files("bridge.operate").joinpath("status_page.html").read_bytes()
OPEN_PATHS = frozenset({"/", "/healthz", "/metrics"})
"""Paths answered without the token: liveness, the metrics scrape, and the page's static shell.
Never an ``/admin/...`` path."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AdminAction = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
"""An admin endpoint's work: the HTTP status and the JSON body to answer."""


def _page_headers(page: bytes) -> dict[str, str]:
    """The page runs its own inline script and nothing else: even markup that slipped into the
    DOM could not run a script, load anything or send data anywhere but this listener."""
    scripts = re.findall(rb"<script>(.*?)</script>", page, re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in scripts
    )
    policy = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


PAGE_HEADERS = _page_headers(PAGE)


class StatusServer:
    def __init__(
        self,
        metrics: Metrics,
        readiness: Readiness,
        host: str,
        port: int,
        status: StatusSnapshot | None = None,
        token: str | None = None,
        reload: AdminAction | None = None,
        admin: Operations | None = None,
    ) -> None:
        self._metrics = metrics
        self._reload = reload
        self._admin = admin
        self._token = token.encode() if token else None
        self._readiness = readiness
        self._status = status
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        auth = ", token=***" if self._token else ""
        return f"StatusServer(host={self.host!r}, port={self.port}{auth})"

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._authorize] if self._token else [], client_max_size=MAX_BODY
        )
        app.router.add_get("/", self._page)
        app.router.add_get("/status.json", self._status_json)
        app.router.add_get("/metrics", self._export)
        app.router.add_get("/healthz", self._alive)
        app.router.add_get("/readyz", self._ready)
        app.router.add_route("*", "/admin/reload", answers(self._admin_reload))
        if self._admin is not None:
            add_admin_routes(app, self._admin)
        # last: any other /admin/... request gets a JSON 404 or 405
        app.router.add_route("*", "/admin/{tail:.*}", unknown_endpoint)
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

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or self._authorized(request):
            return await handler(request)
        return web.json_response(
            {"status": "unauthorized", "detail": "send Authorization: Bearer <[metrics] token>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="restate-bridge"'},
        )

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest takes as long whatever prefix matches: no timing hint
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=PAGE, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
        )

    async def _status_json(self, request: web.Request) -> web.Response:
        if self._status is None:
            raise web.HTTPNotFound()
        return web.json_response(self._status(), dumps=lambda o: orjson.dumps(o).decode())

    async def _export(self, request: web.Request) -> web.Response:
        body = self._metrics.export()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _admin_reload(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return _error(405, "POST to reload the routing file", headers={"Allow": "POST"})
        # the checks of every admin POST: the origin (a foreign page may post without a body),
        # a body only as JSON (which needs a preflight), its size
        await json_body(request)
        if self._reload is None:
            return _error(404, "this listener does not reload anything")
        # the reload goes on if the client goes away: its outcome is logged and counted
        status, body = await asyncio.shield(self._reload())
        return web.json_response(body, status=status)

    async def _alive(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready, detail = self._readiness()
        return web.json_response(
            {"status": "ready" if ready else "not ready", "detail": detail},
            status=200 if ready else 503,
        )


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"status": "error", "detail": detail}, status=status, headers=headers)
