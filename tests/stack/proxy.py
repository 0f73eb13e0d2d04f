"""A counting HTTP proxy in front of Restate's ingress, in a thread of its own.

Restate does not shed load, hang or go half-down on demand, so tests put this proxy between the
bridge and the real ingress. It forwards everything unchanged and records every ``/send``: when it
started and ended, its idempotency key, its headers and the answer. On demand it delays sends,
holds them until released, answers them itself (429 with ``Retry-After``, 503, ...), or forwards
them and loses the answer (the invocation exists; the sender cannot know).

It runs its own event loop in a daemon thread, so a test may block (``bridge.metrics()``,
``bridge.terminate()``) without stalling the sends it is watching.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class Send:
    """One ``/send`` the proxy saw."""

    path: str
    headers: dict[str, str]
    body: bytes
    start: float
    end: float | None = None
    status: int | None = None
    """The answer given; None while under way, or when the bridge hung up first."""
    held: bool = False
    """Whether the proxy held it back (see :meth:`IngressProxy.hold`)."""
    lost: bool = False
    """Forwarded, answered upstream, and the answer not passed on (``lose_from``)."""

    @property
    def idempotency_key(self) -> str:
        return self.headers.get("idempotency-key", "")

    @property
    def partition_offset(self) -> tuple[int, int]:
        """Partition and offset from a default ``{topic}-{partition}-{offset}:route`` key."""
        stem = self.idempotency_key.rsplit(":", 1)[0]
        _, partition, offset = stem.rsplit("-", 2)
        return int(partition), int(offset)


def max_overlap(sends: Iterable[Send], now: float | None = None) -> int:
    """The most sends under way at the same instant (unfinished ones count as still open)."""
    end_of_time = now if now is not None else time.monotonic() + 1e6
    events: list[tuple[float, int]] = []
    for s in sends:
        events.append((s.start, 1))
        events.append((s.end if s.end is not None else end_of_time, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


@dataclass
class IngressProxy:
    upstream: str
    delay: float = 0.0
    """Seconds every forwarded ``/send`` waits before going upstream."""
    refuse_status: int = 503
    refuse: int = 0
    """Answer this many ``/send`` calls with ``refuse_status`` instead of forwarding (-1: all)."""
    retry_after: str | None = None
    lose_from: int | None = None
    """Sends from this index on (0-based, in arrival order) are forwarded, and the connection is
    closed instead of passing the answer on: a node failing after enqueuing, to the sender."""
    refuse_matching: Callable[[Send], bool] | None = None
    """Also answer ``refuse_status`` to every ``/send`` this says yes to (say, one offset's)."""
    hold_from: int | None = None
    """Sends from this index on (0-based, in arrival order) wait until :meth:`release`."""
    tokens: set[str] | None = None
    """When set, every request needs ``Authorization: Bearer`` one of these, else 401."""
    ssl_context: ssl.SSLContext | None = None
    """When set, the proxy terminates TLS (``https://``) and forwards over plain HTTP."""
    refused_tokens: list[str] = field(default_factory=list)
    """Every Authorization header the proxy answered 401, as sent."""
    url: str = ""
    sends: list[Send] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._released = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- control, from the test's thread -----------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        self.release()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def hold(self, after: int = 0) -> None:
        """Hold every send from now on, except the next ``after``."""
        with self._lock:
            self.hold_from = len(self.sends) + after
        self._loop.call_soon_threadsafe(self._released.clear)

    def release(self) -> None:
        """Let held sends (and every later one) through."""
        with self._lock:
            self.hold_from = None
        self._loop.call_soon_threadsafe(self._released.set)

    def snapshot(self, where: Callable[[Send], bool] | None = None) -> list[Send]:
        with self._lock:
            return [s for s in self.sends if where is None or where(s)]

    def held(self) -> list[Send]:
        """Sends held back right now (not those merely on their way upstream)."""
        return self.snapshot(lambda s: s.held and s.end is None)

    def answered(self, status: int = 202) -> list[Send]:
        return self.snapshot(lambda s: s.status == status)

    # -- the server, in the proxy's thread ------------------------------------------------------

    async def _start(self) -> None:
        self._released.set()
        # forward headers as they came: no Content-Type where the bridge sent none
        self._session = aiohttp.ClientSession(skip_auto_headers=("User-Agent", "Content-Type"))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        scheme = "https" if self.ssl_context is not None else "http"
        host = "localhost" if self.ssl_context is not None else "127.0.0.1"
        self.url = f"{scheme}://{host}:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _refuses(self, request: web.Request) -> bool:
        with self._lock:
            tokens = self.tokens
            if tokens is None:
                return False
            given = request.headers.get("Authorization", "")
            if given.removeprefix("Bearer ") in tokens and given.startswith("Bearer "):
                return False
            self.refused_tokens.append(given)
            return True

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self._refuses(request):
            if request.path.endswith("/send"):
                now = time.monotonic()
                headers = {k.lower(): v for k, v in request.headers.items()}
                with self._lock:
                    self.sends.append(Send(request.path, headers, body, now, now, 401))
            return web.json_response(
                {"code": 401, "message": "the test proxy refuses this token"}, status=401
            )
        if not request.path.endswith("/send"):
            return await self._forward(request, body)
        send = Send(
            request.path, {k.lower(): v for k, v in request.headers.items()}, body, time.monotonic()
        )
        with self._lock:
            index = len(self.sends)
            self.sends.append(send)
            refused = self.refuse != 0
            if refused and self.refuse > 0:
                self.refuse -= 1
            elif self.refuse_matching is not None and self.refuse_matching(send):
                refused = True
            held = send.held = self.hold_from is not None and index >= self.hold_from
        try:
            if refused:
                headers = {"Retry-After": self.retry_after} if self.retry_after else {}
                send.status = self.refuse_status
                return web.json_response(
                    {"code": self.refuse_status, "message": "refused by the test proxy"},
                    status=self.refuse_status,
                    headers=headers,
                )
            if held:
                await self._released.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            response = await self._forward(request, body)
            send.status = response.status
            with self._lock:
                lose = self.lose_from is not None and index >= self.lose_from
            if lose:
                send.lost = True
                assert request.transport is not None
                request.transport.close()  # the sender sees the connection end, no answer
            return response
        finally:
            send.end = time.monotonic()

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, f"{self.upstream}{request.path_qs}", data=body, headers=headers
        ) as resp:
            payload = await resp.read()
            return web.Response(body=payload, status=resp.status, content_type=resp.content_type)
