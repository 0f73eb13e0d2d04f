"""The asyncio Restate ingress client: calls, sends, attach and output, over pooled connections."""

from __future__ import annotations

import enum
import functools
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

import orjson

from ._codec import (
    check_header_value,
    check_idempotency_key,
    encode_input,
    error_from_response,
    format_delay,
    idempotency_segment,
    parse_timestamp,
    segment,
)
from ._decode import check_output_type, decode_as
from ._errors import ConnectError, DecodeError, IngressTimeout, InvalidRequest
from ._http import (
    MAX_RESPONSE_BYTES,
    ConnectionPool,
    Origin,
    TransportError,
    without_credentials,
)
from ._types import NO_INPUT, SendReceipt, SendStatus

DEFAULT_URL = "http://localhost:8080"
DEFAULT_TIMEOUT = 30.0
"""Seconds a send, an ``output()`` or a health check waits when neither the client nor the call
sets a timeout: each is answered promptly by a healthy ingress (a send once the invocation is
durably recorded, never after it ran), so a longer wait means something is wrong."""
LIMIT_KEY_HEADER = "x-restate-limit-key"
"""The header Restate 1.7 reads a scoped invocation's limit key from."""
CONNECT_TIMEOUT = 30.0
"""Seconds to establish a connection when a request has no overall timeout (Go's default dialer
waits as long): an unreachable host still fails, a long-running invocation is still waited for."""

Headers = Mapping[str, str]
Timeout = float | Literal["default"] | None
"""A per-call timeout in seconds; ``None``: wait as long as it takes; ``"default"``: the client's
``timeout`` if it set one, else the operation's own default (see ``Client``)."""
T = TypeVar("T")


class _State(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str | None
    invocation_id: str | None = None

    def decode(self, output: Any) -> Any:
        return decode_as(self.body, self.content_type, output, invocation_id=self.invocation_id)


class Client:
    """A client of Restate's HTTP ingress, safe to share between tasks.

    Create one per application and reuse it: it pools connections. Use it as an async context
    manager, or call ``aclose`` when done:

        async with Client("http://localhost:8080") as restate:
            greeting = await restate.service("Greeter", "greet").request("Ada")
            receipt = await restate.object("Ledger", "acct/7", "append").send(
                {"amount": 5}, idempotency_key="order-42", delay=timedelta(seconds=4)
            )

    Timeouts, as in Go (where a call waits as long as its context allows): ``request()`` and
    ``attach()`` wait as long as the invocation runs unless the client or the call sets a timeout;
    ``send()``, ``output()`` and ``health()``, which a healthy ingress answers promptly, wait
    ``DEFAULT_TIMEOUT`` (30 s; ``health`` 5 s) unless one is set. ``timeout`` (seconds, or
    ``None`` for no timeout at all) applies to every request unless a call passes its own
    ``timeout=``. A connection that cannot be established within ``CONNECT_TIMEOUT`` fails
    either way.
    ``token`` is sent as ``Authorization: Bearer``, over any header a call passes; it never appears
    in ``repr`` or logs, and ``set_token`` replaces it while requests are under way.
    ``ssl_context`` verifies an ``https://`` ingress (a custom CA, a client certificate).
    ``max_response_bytes`` bounds an answer's body (default ``MAX_RESPONSE_BYTES``, 16 MiB:
    Restate answers a send in a few hundred bytes, ``attach`` and ``output`` with the handler's
    output); a longer answer, or a malformed one, is a retryable ``ConnectError`` and its
    connection is closed.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float | Literal["default"] | None = "default",
        max_connections: int = 100,
        headers: Headers | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        _check_timeout(timeout)
        self._base = url.rstrip("/")
        self._authorization: str | None = None
        self.set_token(token)
        self._timeout: float | Literal["default"] | None = timeout
        self._max_connections = max_connections
        self._headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        self._ssl = ssl_context
        self._max_response_bytes = max_response_bytes
        self._pool: ConnectionPool | None = None
        self._state = _State.UNOPENED

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """A client for ``$RESTATE_URL`` (default ``http://localhost:8080``) authenticated with
        ``$RESTATE_AUTH_TOKEN`` when set. Keyword arguments are passed on to ``Client``."""
        kwargs.setdefault("token", os.environ.get("RESTATE_AUTH_TOKEN") or None)
        return cls(os.environ.get("RESTATE_URL") or DEFAULT_URL, **kwargs)

    @property
    def url(self) -> str:
        return self._base

    def set_token(self, token: str | None) -> None:
        """Send ``token`` from the next request on (``None``: none); requests under way keep the
        one they were sent with. Safe while other tasks use the client."""
        self._authorization = f"Bearer {token}" if token else None

    def __repr__(self) -> str:
        auth = ", token=***" if self._authorization else ""
        return f"Client(url={without_credentials(self._base)!r}{auth})"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        if self._state is _State.CLOSED:
            raise RuntimeError("Cannot reopen a client instance, once it has been closed.")
        self._state = _State.OPENED
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open(self) -> ConnectionPool:
        if self._state is _State.CLOSED:
            raise RuntimeError("Cannot reopen a client instance, once it has been closed.")
        self._state = _State.OPENED
        if self._pool is None:
            # an unusable URL raises here, at the first request (an InvalidRequest)
            self._pool = ConnectionPool(
                Origin.parse(self._base),
                max_connections=self._max_connections,
                ssl_context=self._ssl,
                max_response_bytes=self._max_response_bytes,
            )
        return self._pool

    async def aclose(self) -> None:
        """Close the pooled connections. Safe to call twice."""
        self._state = _State.CLOSED
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()

    # -- targets ---------------------------------------------------------------------------

    def service(self, service: str, handler: str, *, scope: str | None = None) -> Target:
        """A handler of a service: ``POST /{service}/{handler}``.

        ``scope``: the invocation runs in that Restate scope
        (``/restate/scope/{scope}/call|send/{service}/{handler}``); see ``Target``.
        """
        return Target(self, _path(service, handler), "service", _scope(scope))

    def object(self, name: str, key: str, handler: str, *, scope: str | None = None) -> Target:
        """A handler of the virtual object ``name`` with ``key``: ``/{name}/{key}/{handler}``.

        ``scope``: the object ``key`` of that scope, whose state is its own (Restate 1.7 needs
        ``experimental-enable-scoped-virtual-objects`` for this); see ``Target``.
        """
        return Target(self, _path(name, key, handler), "object", _scope(scope))

    def workflow(
        self, name: str, workflow_id: str, handler: str = "run", *, scope: str | None = None
    ) -> Target:
        """A handler of the workflow ``name`` with id ``workflow_id``.

        The main handler (``run`` in the Python and TypeScript SDKs) accepts no idempotency key:
        the workflow id already makes it run once, and a second send for the same id answers
        ``PreviouslyAccepted``. Shared handlers accept idempotency keys. ``scope``: see
        ``Target``.
        """
        return Target(self, _path(name, workflow_id, handler), "workflow", _scope(scope))

    def invocation(self, invocation_id: str) -> InvocationHandle:
        """An invocation by its id (``inv_...``), to attach to or read its output."""
        return InvocationHandle(self, f"/restate/invocation/{segment(invocation_id)}")

    def service_invocation(
        self, service: str, handler: str, idempotency_key: str
    ) -> InvocationHandle:
        """The invocation of a service handler made with ``idempotency_key``.

        Any key works, whatever its characters: see ``object_invocation``.
        """
        return _by_idempotency_key(self, service, None, handler, idempotency_key)

    def object_invocation(
        self, name: str, key: str, handler: str, idempotency_key: str
    ) -> InvocationHandle:
        """The invocation of an object handler made with ``idempotency_key``.

        Restate does not percent-decode the idempotency-key segment of
        ``/restate/invocation/{name}/{key}/{handler}/{idempotency-key}/...``: a key made of
        letters, digits and ``-._~!$&'()*+,;=:@`` is sent there as it is (every Restate version
        understands it); any other key (a space, ``/``, ``%``, ``?``, ``#``, non-ASCII, empty)
        is looked up with ``POST /restate/attach|output`` and the target in a JSON body, which
        Restate 1.7 added.
        """
        return _by_idempotency_key(self, name, key, handler, idempotency_key)

    def workflow_handle(self, name: str, workflow_id: str) -> InvocationHandle:
        """The run of workflow ``name`` with id ``workflow_id``: attach to it or read its output."""
        return InvocationHandle(self, f"/restate/workflow/{segment(name)}/{segment(workflow_id)}")

    async def health(self, *, timeout: Timeout = 5.0) -> None:
        """Return when the ingress answers ``GET /restate/health``; raise an error otherwise."""
        _check_timeout(timeout)
        await self._request("GET", "/restate/health", timeout=timeout)

    # -- transport -------------------------------------------------------------------------

    async def _request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Headers | None = None,
        idempotency_key: str | None = None,
        delay: str | None = None,
        timeout: Timeout = "default",
        waits: bool = False,
    ) -> _Response:
        """One request; ``waits``: it lasts as long as an invocation runs (``request``,
        ``attach``), so without a set timeout it has none, rather than ``DEFAULT_TIMEOUT``.
        The one place where transport failures become ``_errors``."""
        target = path if delay is None else f"{path}?delay={delay}"
        req_headers = self._request_headers(headers, content_type, idempotency_key)
        seconds = self._seconds(timeout, waits)
        try:
            pool = self._open()
            authorization = self._authorization or pool.origin.basic_auth
            if authorization is not None:  # the token first, else the URL's user:password
                req_headers.append(("Authorization", authorization))
            resp = await pool.request(
                method, target, req_headers, body, seconds, connect_timeout=CONNECT_TIMEOUT
            )
        except TimeoutError as exc:
            waited = CONNECT_TIMEOUT if seconds is None else seconds
            raise IngressTimeout(f"{method} {path}: no answer within {waited:g} s") from exc
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or exc.reason or exc
            raise ConnectError(
                f"{method} {path}: TLS: the ingress's certificate is not trusted ({why})"
            ) from exc
        except ssl.SSLError as exc:
            raise ConnectError(f"{method} {path}: TLS handshake failed: {exc}") from exc
        except (ValueError, TypeError) as exc:
            # before anything is written: an unusable URL, a header value with CR, LF or other
            # control bytes, a value that cannot be encoded (UnicodeEncodeError is a ValueError)
            raise InvalidRequest(f"{method} {path}: invalid request: {exc}") from exc
        except (OSError, TransportError) as exc:
            # refused, reset, DNS, a connection closed mid-response, an answer that is not
            # HTTP/1.1 as the transport reads it or exceeds its limits: retryable
            raise ConnectError(f"{method} {path}: {exc or type(exc).__name__}") from exc
        status, resp_headers = resp.status, resp.headers
        if status >= 400:
            raise error_from_response(
                status,
                resp.body,
                source_header=resp_headers.get("x-restate-error-source"),
                retry_after=resp_headers.get("retry-after"),
                invocation_id=resp_headers.get("x-restate-id"),
            )
        return _Response(
            status, resp.body, resp_headers.get("content-type"), resp_headers.get("x-restate-id")
        )

    def _request_headers(
        self, headers: Headers | None, content_type: str | None, idempotency_key: str | None
    ) -> list[tuple[str, str]]:
        """The caller's headers, then the client's, then the content type and idempotency key
        (the ``Authorization`` header is added by ``_request``: the client's only)."""
        req_headers: list[tuple[str, str]] = []
        if headers:
            # the client's credentials, never a caller's
            req_headers += [(n, v) for n, v in headers.items() if n.lower() != "authorization"]
        if self._headers:
            given = {n.lower() for n, _ in req_headers}
            req_headers += [(n, v) for n, v in self._headers.items() if n.lower() not in given]
        if content_type is not None:
            req_headers = [(n, v) for n, v in req_headers if n.lower() != "content-type"]
            req_headers.append(("Content-Type", content_type))
        if idempotency_key is not None:
            req_headers.append(("idempotency-key", idempotency_key))
        return req_headers

    def _seconds(self, timeout: Timeout, waits: bool) -> float | None:
        """The request's overall timeout in seconds; ``None``: none (connecting is still bounded
        by ``CONNECT_TIMEOUT``)."""
        seconds = self._timeout if timeout == "default" else timeout
        if seconds == "default":
            return None if waits else DEFAULT_TIMEOUT
        return seconds


def _path(*parts: str) -> str:
    """``/a/b/c`` from path segments, each percent-encoded; the last 4,096 paths are cached
    (the same object keys come back record after record)."""
    if all(type(part) is str for part in parts):
        return _cached_path(parts)
    return "".join(f"/{segment(part)}" for part in parts)  # the TypeError for a non-str


@functools.lru_cache(maxsize=4096)
def _cached_path(parts: tuple[str, ...]) -> str:
    return "".join(f"/{segment(part)}" for part in parts)


def _scope(scope: str | None) -> str | None:
    """``scope`` checked as a path segment: a ``str`` (``TypeError``), not empty (``ValueError``:
    ``/restate/scope//...`` would name no scope). Restate itself checks its characters."""
    if scope is None:
        return None
    if not isinstance(scope, str):
        raise TypeError(f"scope must be str, not {type(scope).__name__}")
    if not scope:
        raise ValueError("scope must not be empty; pass None for an unscoped target")
    return scope


def _prepared(
    target: Target,
    input: Any,
    content_type: str | None,
    headers: Headers | None,
    limit_key: str | None,
    idempotency_key: str | None,
    timeout: Timeout,
) -> tuple[bytes | None, str | None, Headers | None]:
    """A call's body, content type and headers, every argument checked before anything is
    sent (``TypeError`` / ``ValueError`` for a programming error)."""
    _check_timeout(timeout)
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
    headers = _limit_key_headers(target, headers, limit_key)
    body, ctype = encode_input(input, content_type)
    return body, ctype, headers


def _limit_key_headers(
    target: Target, headers: Headers | None, limit_key: str | None
) -> Headers | None:
    """``headers`` with ``x-restate-limit-key`` set (over any the caller passed) when
    ``limit_key`` is given; a limit key without a scope is refused before sending."""
    if limit_key is None:
        return headers
    if not isinstance(limit_key, str):
        raise TypeError(f"limit_key must be str, not {type(limit_key).__name__}")
    if target.scope is None:
        raise ValueError(
            "limit_key needs a scoped target (scope=...): Restate refuses a limit key on an "
            "unscoped invocation"
        )
    check_header_value("limit key", limit_key)
    merged = {k: v for k, v in (headers or {}).items() if k.lower() != LIMIT_KEY_HEADER}
    merged[LIMIT_KEY_HEADER] = limit_key
    return merged


def _check_timeout(timeout: Timeout) -> None:
    if timeout is None or timeout == "default":
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be seconds, None or 'default', not {timeout!r}")
    if not timeout > 0:
        raise ValueError("timeout must be positive, or None for no timeout")


@dataclass(frozen=True, slots=True)
class Target:
    """A handler to call or send to; made by ``Client.service``, ``object``, ``workflow``.

    ``path`` names the handler (``/{service}[/{key}]/{handler}``). Unscoped, a call goes to
    ``path`` and a send to ``{path}/send``. With a ``scope`` (Restate 1.7's scoped invocations,
    behind the server's ``experimental-enable-vqueues`` option) they go to
    ``/restate/scope/{scope}/call{path}`` and ``/restate/scope/{scope}/send{path}``; a
    ``limit_key=`` on ``send`` or ``request`` is then sent as ``x-restate-limit-key``
    (``level1`` or ``level1/level2``), which Restate accepts only on a scoped invocation.
    """

    client: Client
    path: str
    kind: Literal["service", "object", "workflow"]
    scope: str | None = None

    @property
    def call_path(self) -> str:
        """The path ``request`` posts to."""
        if self.scope is None:
            return self.path
        return f"/restate/scope/{segment(self.scope)}/call{self.path}"

    @property
    def send_path(self) -> str:
        """The path ``send`` posts to."""
        if self.scope is None:
            return f"{self.path}/send"
        return f"/restate/scope/{segment(self.scope)}/send{self.path}"

    def send_url(self, *, delay: timedelta | None = None) -> str:
        """The URL ``send`` posts to, with the delay encoded as the client sends it."""
        url = f"{self.client.url}{self.send_path}"
        formatted = None if delay is None else format_delay(delay)
        return url if formatted is None else f"{url}?delay={formatted}"

    @overload
    async def request(
        self,
        input: Any = ...,
        *,
        output: None = None,
        idempotency_key: str | None = ...,
        headers: Headers | None = ...,
        content_type: str | None = ...,
        timeout: Timeout = ...,
        limit_key: str | None = ...,
    ) -> Any: ...

    @overload
    async def request(
        self,
        input: Any = ...,
        *,
        output: type[T],
        idempotency_key: str | None = ...,
        headers: Headers | None = ...,
        content_type: str | None = ...,
        timeout: Timeout = ...,
        limit_key: str | None = ...,
    ) -> T: ...

    async def request(
        self,
        input: Any = NO_INPUT,
        *,
        output: Any = None,
        idempotency_key: str | None = None,
        headers: Headers | None = None,
        content_type: str | None = None,
        timeout: Timeout = "default",
        limit_key: str | None = None,
    ) -> Any:
        """Call the handler and wait for its output, as long as it runs unless a timeout is set.

        ``output=None``: decoded JSON, or ``bytes`` for other content types; ``output=Type``:
        decoded into ``Type`` (see ``bridge.ingress._decode``; ``bytes``: the raw body).
        Raises ``InvocationError`` when the handler fails terminally, ``DecodeError``
        when the answer does not fit ``output``. ``limit_key``: see ``Target``.
        """
        check_output_type(output)
        body, ctype, headers = _prepared(
            self, input, content_type, headers, limit_key, idempotency_key, timeout
        )
        resp = await self.client._request(
            "POST",
            self.call_path,
            body=body,
            content_type=ctype,
            headers=headers,
            idempotency_key=idempotency_key,
            timeout=timeout,
            waits=True,
        )
        return resp.decode(output)

    async def send(
        self,
        input: Any = NO_INPUT,
        *,
        delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: Headers | None = None,
        content_type: str | None = None,
        timeout: Timeout = "default",
        limit_key: str | None = None,
    ) -> SendReceipt:
        """Enqueue an invocation without waiting for it to run (``/send``, HTTP 202).

        The 202 comes once Restate has durably recorded the invocation, so a second send for
        the same object key made after it will run after it. Waits ``DEFAULT_TIMEOUT``
        unless the client or the call sets a timeout. ``limit_key``: see ``Target``.
        """
        body, ctype, headers = _prepared(
            self, input, content_type, headers, limit_key, idempotency_key, timeout
        )
        resp = await self.client._request(
            "POST",
            self.send_path,
            body=body,
            content_type=ctype,
            headers=headers,
            idempotency_key=idempotency_key,
            delay=None if delay is None else format_delay(delay),
            timeout=timeout,
        )
        return _receipt(resp.body)


def _receipt(body: bytes) -> SendReceipt:
    try:
        doc = orjson.loads(body)
        execution_time = doc.get("executionTime")
        return SendReceipt(
            invocation_id=doc["invocationId"],
            status=SendStatus(doc["status"]),
            execution_time=parse_timestamp(execution_time) if execution_time else None,
        )
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise DecodeError(f"unexpected answer to a send: {body[:200]!r}", body=body) from exc


@dataclass(frozen=True, slots=True)
class InvocationHandle:
    """An existing invocation: by id, by idempotency key, or a workflow run.

    ``GET {path}/attach|output``; with a ``lookup`` body, ``POST {path}/attach|output`` with it
    (``path`` is then ``/restate``: Restate 1.7's lookup by a JSON target).
    """

    client: Client
    path: str
    lookup: bytes | None = None

    @overload
    async def attach(self, *, output: None = None, timeout: Timeout = ...) -> Any: ...

    @overload
    async def attach(self, *, output: type[T], timeout: Timeout = ...) -> T: ...

    async def attach(self, *, output: Any = None, timeout: Timeout = "default") -> Any:
        """Wait until the invocation completes and return its output (or raise its error).

        Waits as long as the invocation runs unless the client or the call sets a timeout.
        ``output=bytes`` returns the body exactly as the ingress returned it, JSON included.
        An unknown or expired invocation raises ``InvocationError`` with status 404:
        Restate reports it as the attached invocation's outcome (``source="invocation"``).
        """
        return await self._get("attach", output, timeout, waits=True)

    @overload
    async def output(self, *, output: None = None, timeout: Timeout = ...) -> Any: ...

    @overload
    async def output(self, *, output: type[T], timeout: Timeout = ...) -> T: ...

    async def output(self, *, output: Any = None, timeout: Timeout = "default") -> Any:
        """The output if the invocation completed; raises ``NotReady`` if still running,
        ``ResponseError`` 404 (``source="ingress"``) if unknown or expired."""
        return await self._get("output", output, timeout, waits=False)

    async def _get(self, verb: str, output: Any, timeout: Timeout, *, waits: bool) -> Any:
        check_output_type(output)
        _check_timeout(timeout)
        if self.lookup is None:
            resp = await self.client._request(
                "GET", f"{self.path}/{verb}", timeout=timeout, waits=waits
            )
        else:
            resp = await self.client._request(
                "POST",
                f"{self.path}/{verb}",
                body=self.lookup,
                content_type="application/json",
                timeout=timeout,
                waits=waits,
            )
        return resp.decode(output)


def _by_idempotency_key(
    client: Client, service: str, key: str | None, handler: str, idempotency_key: str
) -> InvocationHandle:
    for value in (service, handler, idempotency_key) if key is None else (service, key, handler):
        segment(value)  # a TypeError for anything but str
    raw = idempotency_segment(idempotency_key)
    if raw is not None:
        keyed = "" if key is None else f"/{segment(key)}"
        path = f"/restate/invocation/{segment(service)}{keyed}/{segment(handler)}/{raw}"
        return InvocationHandle(client, path)
    target: dict[str, str] = {"target": "idempotentInvocation", "service": service}
    if key is not None:
        target["key"] = key
    target |= {"handler": handler, "idempotencyKey": idempotency_key}
    return InvocationHandle(client, "/restate", orjson.dumps(target))
