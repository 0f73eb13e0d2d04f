"""The asyncio Restate ingress client: calls, sends, attach and output, over one pooled session."""

from __future__ import annotations

import enum
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import aiohttp
import orjson
from yarl import URL

from ._codec import (
    decode_output,
    encode_input,
    error_from_response,
    format_delay,
    parse_timestamp,
    segment,
)
from ._errors import ConnectError, IngressError, IngressTimeout, InvalidRequest
from ._types import NO_INPUT, SendReceipt, SendStatus

DEFAULT_URL = "http://localhost:8080"
DEFAULT_TIMEOUT = 30.0

Headers = Mapping[str, str]


class _State(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str | None


class Client:
    """A client of Restate's HTTP ingress, safe to share between tasks.

    Create one per application and reuse it: it pools connections. Use it as an async context
    manager, or call :meth:`aclose` when done::

        async with Client("http://localhost:8080") as restate:
            greeting = await restate.service("Greeter", "greet").request("Ada")
            receipt = await restate.object("Ledger", "acct/7", "append").send(
                {"amount": 5}, idempotency_key="order-42", delay=timedelta(seconds=4)
            )

    ``timeout`` (seconds, ``None`` for none) applies to every request unless a call sets its own.
    ``token`` is sent as ``Authorization: Bearer``, over any header a call passes; it never appears
    in ``repr`` or logs, and :meth:`set_token` replaces it while requests are under way.
    ``ssl_context`` verifies an ``https://`` ingress (a custom CA, a client certificate).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_connections: int = 100,
        headers: Headers | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive, or None for no timeout")
        self._base = url.rstrip("/")
        self._authorization: str | None = None
        self.set_token(token)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._state = _State.UNOPENED

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """A client for ``$RESTATE_URL`` (default ``http://localhost:8080``) authenticated with
        ``$RESTATE_AUTH_TOKEN`` when set. Keyword arguments are passed on to :class:`Client`."""
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
        return f"Client(url={self._base!r}{auth})"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open(self) -> aiohttp.ClientSession:
        if self._state is _State.CLOSED:
            raise RuntimeError("Cannot reopen a client instance, once it has been closed.")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=30,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._timeout,
                # no Content-Type unless we set one: Restate rejects it on handlers without input
                skip_auto_headers=("User-Agent", "Content-Type"),
                auto_decompress=False,
            )
            self._state = _State.OPENED
        return self._session

    async def aclose(self) -> None:
        """Close the pooled connections. Safe to call twice."""
        self._state = _State.CLOSED
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- targets ---------------------------------------------------------------------------

    def service(self, service: str, handler: str) -> Target:
        """A handler of a service: ``POST /{service}/{handler}``."""
        return Target(self, f"/{segment(service)}/{segment(handler)}", "service")

    def object(self, name: str, key: str, handler: str) -> Target:
        """A handler of the virtual object ``name`` with ``key``: ``/{name}/{key}/{handler}``."""
        return Target(self, f"/{segment(name)}/{segment(key)}/{segment(handler)}", "object")

    def workflow(self, name: str, workflow_id: str, handler: str = "run") -> Target:
        """A handler of the workflow ``name`` with id ``workflow_id``.

        The main handler (``run`` in the Python and TypeScript SDKs) accepts no idempotency key:
        the workflow id already makes it run once, and a second send for the same id answers
        ``PreviouslyAccepted``. Shared handlers accept idempotency keys.
        """
        path = f"/{segment(name)}/{segment(workflow_id)}/{segment(handler)}"
        return Target(self, path, "workflow")

    def invocation(self, invocation_id: str) -> InvocationHandle:
        """An invocation by its id (``inv_...``), to attach to or read its output."""
        return InvocationHandle(self, f"/restate/invocation/{segment(invocation_id)}")

    def service_invocation(
        self, service: str, handler: str, idempotency_key: str
    ) -> InvocationHandle:
        """The invocation of a service handler made with ``idempotency_key``."""
        path = (
            f"/restate/invocation/{segment(service)}/{segment(handler)}/{segment(idempotency_key)}"
        )
        return InvocationHandle(self, path)

    def object_invocation(
        self, name: str, key: str, handler: str, idempotency_key: str
    ) -> InvocationHandle:
        """The invocation of an object handler made with ``idempotency_key``."""
        path = (
            f"/restate/invocation/{segment(name)}/{segment(key)}/{segment(handler)}"
            f"/{segment(idempotency_key)}"
        )
        return InvocationHandle(self, path)

    def workflow_handle(self, name: str, workflow_id: str) -> InvocationHandle:
        """The run of workflow ``name`` with id ``workflow_id``: attach to it or read its output."""
        return InvocationHandle(self, f"/restate/workflow/{segment(name)}/{segment(workflow_id)}")

    async def health(self, *, timeout: float | Literal["default"] | None = 5.0) -> None:
        """Return when the ingress answers ``GET /restate/health``; raise an error otherwise."""
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
        timeout: float | Literal["default"] | None = "default",
    ) -> _Response:
        session = self._open()
        url = f"{self._base}{path}"
        if delay is not None:
            url = f"{url}?delay={delay}"
        req_headers: dict[str, str] = dict(headers) if headers else {}
        if content_type is not None:
            req_headers["Content-Type"] = content_type
        if idempotency_key is not None:
            req_headers["idempotency-key"] = idempotency_key
        for name in [n for n in req_headers if n.lower() == "authorization"]:
            del req_headers[name]  # the client's credentials, never a caller's
        if self._authorization is not None:
            req_headers["Authorization"] = self._authorization
        req_timeout = (
            self._timeout if timeout == "default" else aiohttp.ClientTimeout(total=timeout)
        )
        try:
            async with session.request(
                method,
                URL(url, encoded=True),
                data=body,
                headers=req_headers,
                timeout=req_timeout,
            ) as resp:
                data = await resp.read()
                status = resp.status
                resp_headers = resp.headers
        except TimeoutError as exc:
            raise IngressTimeout(f"{method} {path}: no answer within the timeout") from exc
        except aiohttp.InvalidURL as exc:  # a ClientError, but no retry would help
            raise InvalidRequest(f"{method} {path}: invalid URL: {exc}") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            why = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
            raise ConnectError(
                f"{method} {path}: TLS: the ingress's certificate is not trusted ({why})"
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise ConnectError(f"{method} {path}: TLS handshake failed: {exc}") from exc
        except aiohttp.ClientError as exc:
            # includes a connection closed mid-response (ClientPayloadError): retryable
            raise ConnectError(f"{method} {path}: {exc or type(exc).__name__}") from exc
        except (ValueError, TypeError) as exc:
            # raised while building the request, before anything is written: a header value with
            # CR, LF or NUL ("Forbidden control character"), a bad port, a value that cannot be
            # encoded (UnicodeEncodeError is a ValueError)
            raise InvalidRequest(f"{method} {path}: invalid request: {exc}") from exc
        if status >= 400:
            raise error_from_response(
                status,
                data,
                source_header=resp_headers.get("x-restate-error-source"),
                retry_after=resp_headers.get("Retry-After"),
                invocation_id=resp_headers.get("x-restate-id"),
            )
        return _Response(status, data, resp_headers.get("Content-Type"))


@dataclass(frozen=True, slots=True)
class Target:
    """A handler to call or send to; made by :meth:`Client.service`, ``object``, ``workflow``."""

    client: Client
    path: str
    kind: Literal["service", "object", "workflow"]

    def send_url(self, *, delay: timedelta | None = None) -> str:
        """The URL :meth:`send` posts to, with the delay encoded as the client sends it."""
        url = f"{self.client.url}{self.path}/send"
        formatted = None if delay is None else format_delay(delay)
        return url if formatted is None else f"{url}?delay={formatted}"

    async def request(
        self,
        input: Any = NO_INPUT,
        *,
        idempotency_key: str | None = None,
        headers: Headers | None = None,
        content_type: str | None = None,
        timeout: float | Literal["default"] | None = "default",
    ) -> Any:
        """Call the handler and wait for its output (decoded JSON, or ``bytes``).

        Raises :class:`InvocationError` when the handler fails terminally.
        """
        body, ctype = encode_input(input, content_type)
        resp = await self.client._request(
            "POST",
            self.path,
            body=body,
            content_type=ctype,
            headers=headers,
            idempotency_key=idempotency_key,
            timeout=timeout,
        )
        return decode_output(resp.body, resp.content_type)

    async def send(
        self,
        input: Any = NO_INPUT,
        *,
        delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: Headers | None = None,
        content_type: str | None = None,
        timeout: float | Literal["default"] | None = "default",
    ) -> SendReceipt:
        """Enqueue an invocation without waiting for it to run (``/send``, HTTP 202).

        The 202 comes once Restate has durably recorded the invocation, so a second send for
        the same object key made after it will run after it.
        """
        body, ctype = encode_input(input, content_type)
        resp = await self.client._request(
            "POST",
            f"{self.path}/send",
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
        raise IngressError(f"unexpected answer to a send: {body[:200]!r}") from exc


@dataclass(frozen=True, slots=True)
class InvocationHandle:
    """An existing invocation: by id, by idempotency key, or a workflow run."""

    client: Client
    path: str

    async def attach(self, *, timeout: float | Literal["default"] | None = "default") -> Any:
        """Wait until the invocation completes and return its output (or raise its error)."""
        resp = await self.client._request("GET", f"{self.path}/attach", timeout=timeout)
        return decode_output(resp.body, resp.content_type)

    async def output(self, *, timeout: float | Literal["default"] | None = "default") -> Any:
        """The output if the invocation completed; raises :class:`NotReady` if still running."""
        resp = await self.client._request("GET", f"{self.path}/output", timeout=timeout)
        return decode_output(resp.body, resp.content_type)
