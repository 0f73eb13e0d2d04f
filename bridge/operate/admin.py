"""The admin API on the bridge's listener: the operator's controls at run time.

    POST /admin/routes/{route}/pause       POST /admin/routes/{route}/resume
    POST /admin/topics/{topic}/pause       POST /admin/topics/{topic}/resume
    POST /admin/partitions/{topic}/{partition}/release
         {"action": "retry"}  or  {"action": "skip", "reason": "...", "topic": "parking-lot"}
    POST /admin/reload                     (:mod:`bridge.operate.reload`; registered by the server)

Every answer is JSON: ``{"status": "ok", ...}``, or ``{"status": "error", "detail": "..."}`` with
a 4xx. With a listener token every admin path needs it (the server's middleware answers 401;
admin paths are never open). A POST that carries a body must say ``Content-Type:
application/json`` (415 otherwise): a foreign web page can send a form or ``text/plain`` without
asking, never JSON. A browser request from another origin (``Sec-Fetch-Site`` or ``Origin`` says
so) is refused with 403, which also covers a forged POST without a body.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from ..config.schema import topic_name_problem
from ..core.controls import BadRequest, ControlError, ControlKind, ReleaseRequest, parse_release
from ..core.offsets import TopicPartition

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
"""Bytes an admin request's body may have; a release is a few hundred."""
INT32_MAX = 2**31 - 1
ENDPOINTS = (
    "POST /admin/reload",
    "POST /admin/routes/{route}/pause|resume",
    "POST /admin/topics/{topic}/pause|resume",
    "POST /admin/partitions/{topic}/{partition}/release",
)
_KNOWN_PATHS = (
    re.compile(r"/admin/(routes|topics)/[^/]+/(pause|resume)"),
    re.compile(r"/admin/partitions/[^/]+/[^/]+/release"),
)


class Operations(Protocol):
    """What the admin API asks of the bridge (:class:`bridge.worker.Bridge` does it)."""

    def pause(self, kind: ControlKind, name: str, paused: bool) -> dict[str, Any]:
        """Pause or resume a route or topic; raises :class:`ControlError`."""

    async def release(self, tp: TopicPartition, request: ReleaseRequest) -> dict[str, Any]:
        """Release a blocked partition; raises :class:`ControlError`."""


def error(status: int, detail: str) -> web.Response:
    return web.json_response({"status": "error", "detail": detail}, status=status)


def ok(**fields: Any) -> web.Response:
    return web.json_response({"status": "ok", **fields}, dumps=lambda o: orjson.dumps(o).decode())


class _Refused(Exception):
    """A request refused before the bridge sees it (its shape, its origin)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def _cross_origin(request: web.Request) -> bool:
    """A browser's request from a page of another origin. Browsers set ``Sec-Fetch-Site`` (a
    page cannot), and ``Origin`` on a POST; a TLS-terminating proxy may change the scheme, so
    only the host and port are compared."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser (curl, a script), or one that sends neither
    return urllib.parse.urlsplit(origin).netloc != request.host


async def json_body(request: web.Request) -> Any:
    """The request's JSON body (``None`` when it has none), after the checks every admin POST
    passes: the origin, the content type, the size, JSON."""
    if _cross_origin(request):
        raise _Refused(403, "refused: a browser request from a page of another origin")
    if not request.body_exists:
        return None  # whatever Content-Type says (some clients send one with no body)
    if "Content-Type" not in request.headers:
        raise _Refused(415, "a body needs Content-Type: application/json")
    if request.content_type != "application/json":
        given = request.headers["Content-Type"]
        raise _Refused(415, f"send Content-Type: application/json, not {given!r}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _Refused(413, f"the body is larger than {MAX_BODY} bytes") from None
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Refused(400, f"the body is not JSON: {exc}") from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answers(handle: Handler) -> Handler:
    """Turn a refusal into its JSON answer; log it (without the body) at INFO."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handle(request)
        except (ControlError, _Refused) as exc:
            status = exc.status
            log.info("admin %s %s refused (%d): %s", request.method, request.path, status, exc)
            return error(status, str(exc))

    return answer


def add_admin_routes(app: web.Application, ops: Operations) -> None:
    """Register the pause, resume and release endpoints on ``app`` (see the module docstring).
    The caller registers :func:`unknown_endpoint` after every admin endpoint."""

    def pausing(kind: ControlKind, paused: bool) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await json_body(request)
            if body not in (None, {}):
                verb = "pause" if paused else "resume"
                raise BadRequest(f"{verb} takes no body (or {{}}), not {body!r:.100}")
            return ok(**ops.pause(kind, request.match_info["name"], paused))

        return answers(handle)

    async def release(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        topic, text = request.match_info["topic"], request.match_info["partition"]
        if not (text.isascii() and text.isdigit()) or int(text) > INT32_MAX:
            raise BadRequest(f"partition must be a number from 0 to {INT32_MAX}, not {text!r}")
        if body is None:
            raise BadRequest(
                'send {"action": "retry"} or {"action": "skip", "reason": "...", "topic": "..."}'
            )
        asked = parse_release(body, topic_name_problem)
        return ok(**await ops.release(TopicPartition(topic, int(text)), asked))

    router = app.router
    router.add_post("/admin/routes/{name}/pause", pausing("route", True))
    router.add_post("/admin/routes/{name}/resume", pausing("route", False))
    router.add_post("/admin/topics/{name}/pause", pausing("topic", True))
    router.add_post("/admin/topics/{name}/resume", pausing("topic", False))
    router.add_post("/admin/partitions/{topic}/{partition}/release", answers(release))


async def unknown_endpoint(request: web.Request) -> web.Response:
    """Any other ``/admin/...`` request: 405 for a known path with another method, else 404.
    Registered last, after every admin endpoint."""
    known = any(p.fullmatch(request.path) for p in _KNOWN_PATHS)
    detail = (
        f"{request.method} {request.path}: "
        f"{'use POST' if known else 'no such admin endpoint'}; the endpoints: "
        + ", ".join(ENDPOINTS)
    )
    return error(405 if known else 404, detail)
