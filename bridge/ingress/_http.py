"""A small HTTP/1.1 client transport: keep-alive connections over asyncio protocols.

The ingress client needs little of HTTP: ``GET`` and ``POST`` with small bodies, answers with a
``Content-Length`` (or chunked), keep-alive, TLS, a connection limit and timeouts. A general
client pays for much more on every request (URL objects, multidicts, cookie jars, tracing hooks,
timer contexts): through aiohttp a ``/send`` cost the bridge about 0.07 ms of CPU, here about a
quarter of that (``bench/ingress_client.py``; docs/performance.md).

Answers are read by llhttp (``httptools``, the parser of uvicorn and Node.js): status line,
headers, Content-Length and chunked framing, strictly (one Content-Length, never with
Transfer-Encoding, hexadecimal chunk sizes, CRLF line ends, no control bytes in headers). This
module adds what a parser cannot know: the limits (``MAX_HEAD``, ``max_response_bytes``,
``MAX_INFORMATIONAL``), which answers it accepts (HTTP/1.0 or 1.1, a status 100-599, no
upgrade, no transfer coding but ``chunked``) and when a connection may carry another request:
never after bytes that came out of turn (past a complete answer, or while it was idle), so no
answer is ever taken for another request's.

Errors are this module's own (``TransportError`` and its subclasses) plus ``OSError``,
``ssl.SSLError`` and ``TimeoutError`` from the socket layer; the client translates them into
``_errors`` in one place. Whatever the server got wrong is a ``ProtocolError``, and its
connection is closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import httptools

MAX_HEAD = 64 * 1024
"""The longest status line plus headers accepted in an answer (bytes)."""
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""The default longest answer body accepted (bytes): Restate's answers to sends are a few hundred
bytes; ``attach`` and ``output`` carry a handler's output, which Restate itself keeps small."""
MAX_INFORMATIONAL = 8
"""The most 1xx answers (100 Continue, 103 Early Hints) accepted before the final one."""
IDLE_TIMEOUT = 15.0
"""Seconds an idle keep-alive connection is reused for; older ones are closed (a server may have
closed them already)."""

_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F)) - {"\t"}
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class TransportError(Exception):
    """The exchange failed below HTTP semantics."""


class InvalidURL(TransportError, ValueError):
    """The base URL cannot be used: no host, a bad port, a scheme other than http(s)."""


class InvalidHeader(TransportError, ValueError):
    """A header name or value that cannot go on the wire (CR, LF, NUL, other control bytes)."""


class ConnectionClosed(TransportError):
    """The server closed the connection before the whole answer arrived."""


class ProtocolError(TransportError):
    """The server's answer is not HTTP/1.1 this transport understands."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host, port and a path prefix, parsed once; and basic
    credentials when the URL carries ``user:password@`` (never shown in reprs or errors)."""

    tls: bool
    host: str
    port: int
    prefix: str
    host_header: bytes
    basic_auth: str | None = field(default=None, repr=False)
    """``Basic ...`` for the ``Authorization`` header, from the URL's user information."""

    @classmethod
    def parse(cls, url: str) -> Origin:
        shown_url = without_credentials(url)
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:  # a bad port, an unclosed IPv6 bracket
            raise InvalidURL(f"{shown_url!r}: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise InvalidURL(f"{shown_url!r}: the scheme must be http or https")
        host = parts.hostname
        if not host:
            raise InvalidURL(f"{shown_url!r} has no host")
        tls = parts.scheme == "https"
        default = 443 if tls else 80
        try:
            shown = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError as exc:
            raise InvalidURL(f"{shown_url!r}: {exc}") from None
        shown = f"[{shown}]" if ":" in shown else shown
        netloc = shown if port in (None, default) else f"{shown}:{port}"
        prefix = parts.path.rstrip("/")
        _check_target(prefix)
        basic = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            basic = f"Basic {token}"
        return cls(tls, host, port or default, prefix, netloc.encode("ascii"), basic)


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, headers (names lower-cased; the last of repeated ones), body."""

    status: int
    headers: dict[str, str]
    body: bytes


def _check_target(target: str) -> None:
    if not (target.isascii() and target.isprintable()) or " " in target:
        raise InvalidURL(f"the request target {target[:100]!r} holds spaces or control bytes")


def _head(
    method: str, target: str, host: bytes, headers: Sequence[tuple[str, str]], body: bytes | None
) -> bytes:
    """The request line and headers, each checked: nothing goes on the wire that could split a
    header or smuggle a request."""
    _check_target(target)
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("ascii"), b"Host: ", host, b"\r\n"]
    for name, value in headers:
        if not name or not _TOKEN.issuperset(name):
            raise InvalidHeader(f"invalid header name {name[:100]!r}")
        if not _CONTROL.isdisjoint(value):
            raise InvalidHeader(f"Forbidden control character in header {name!r}")
        lines += (name.encode("ascii"), b": ", value.encode("utf-8"), b"\r\n")
    if body is not None or method == "POST":
        lines.append(b"Content-Length: %d\r\n" % len(body or b""))
    lines.append(b"\r\n")
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time.

    llhttp reads the bytes (its callbacks below: ``on_message_begin`` ... ``on_message_complete``);
    this class keeps the limits, refuses answers we never asked for, and decides whether the
    connection may carry another request (``reusable``).
    """

    def __init__(self, max_body: int = MAX_RESPONSE_BYTES, max_head: int = MAX_HEAD) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self._max_body = max_body
        self._max_head = max_head
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        # the exchange under way (reset by ``exchange``)
        self._answered = False
        """Its answer is complete: whatever the server sends now answers nothing."""
        self._received = 0
        """Bytes read for it, 1xx answers included."""
        self._head_from = 0
        self._body_from = 0
        """``_received`` when the head being read began, when the final head was complete: both
        taken at the end of a read, so the limits may let one read more through."""
        self._in_head = True
        self._informational = 0
        self._status = 0
        self._headers: dict[str, str] = {}
        self._chunked = False
        self._until_eof = False
        """The body ends when the server closes the connection (no length, not chunked)."""
        self._body: list[bytes] = []
        self._body_size = 0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is a transport in all but its class
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._until_eof and exc is None:  # the body ends with the connection
            self._answered = True
            self._deliver()
            return
        why = f": {exc}" if exc else ""
        got = "before answering" if self._received == 0 else "in the middle of its answer"
        waiter.set_exception(ConnectionClosed(f"the server closed the connection {got}{why}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or self._answered:
            # nothing asked, or the answer is complete: a server talking out of turn, whose
            # bytes answer no request; the connection goes with them
            self.reusable = False
            self.close()
            return
        start = self._received
        self._received = received = start + len(data)
        try:
            if start < 5 and data[: 5 - start] != b"HTTP/"[start:received]:
                # llhttp also reads RTSP/ and ICE/ status lines, and skips leading blank lines
                raise ProtocolError(f"not an HTTP/1.x answer: {data[:40]!r}")
            self._parser.feed_data(data)
            if self._answered:
                return
            if self._in_head:
                if received - self._head_from > self._max_head:
                    raise ProtocolError(
                        f"the answer's status line and headers exceed {self._max_head} bytes"
                    )
            elif received - self._body_from > self._max_body + self._max_head:
                # chunk framing, extensions and trailers, which llhttp reads but never hands on
                raise ProtocolError(f"the answer exceeds {self._max_body} bytes and framing")
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._answered:  # bytes past a complete answer in the same read: it stands
                self.reusable = False
                self.close()
                return
            cause = exc.__context__  # what a callback of ours raised
            if isinstance(cause, TransportError):
                self._fail(cause)
            else:
                error = ProtocolError(f"not an HTTP/1.x answer: {exc}")
                error.__cause__ = cause
                self._fail(error)
        except TransportError as exc:
            self._fail(exc)

    # -- llhttp's callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answered:  # a second answer to one request: a desync, or a smuggling attempt
            raise ProtocolError("bytes after a complete answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer after a chunked body: nothing we read
        key = name.decode("latin-1").lower()
        if key == "transfer-encoding":
            if self._chunked or value.lower() != b"chunked":
                raise ProtocolError(f"a transfer coding other than chunked: {value[:40]!r}")
            self._chunked = True
        self._headers[key] = value.decode("latin-1").rstrip(" \t")

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if not 100 <= status <= 599 or status == 101:  # 101: switching protocols, unasked
            raise ProtocolError(f"an answer with status {status}")
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise ProtocolError(f"not an HTTP/1.x answer: HTTP/{version}")
        self._status = status
        self._in_head = False
        if status < 200:
            return
        self._body_from = self._received
        length = self._headers.get("content-length")
        if length is not None:
            if int(length) > self._max_body:  # llhttp checked that it is digits
                raise ProtocolError(
                    f"a body of {length} bytes, over max_response_bytes ({self._max_body})"
                )
        elif not self._chunked and status != 204 and status != 304:
            self._until_eof = True
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            raise ProtocolError(f"a body over max_response_bytes ({self._max_body})")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._informational += 1
            if self._informational > MAX_INFORMATIONAL:
                raise ProtocolError(f"more than {MAX_INFORMATIONAL} informational (1xx) answers")
            self._in_head = True
            self._head_from = self._received
            self._headers = {}
            return
        self._answered = True
        self._until_eof = False
        if not self._parser.should_keep_alive():  # Connection: close, HTTP/1.0
            self.reusable = False
        self._deliver()

    # -- requests ---------------------------------------------------------------------------

    async def exchange(self, request: bytes, deadline: float | None) -> Response:
        """Write ``request`` and wait for its whole answer, until ``deadline`` (loop time) at
        the latest (then ``TimeoutError``, and the connection is dropped)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._answered = False
        self._received = self._head_from = self._informational = self._body_size = 0
        self._in_head = True
        self._headers = {}
        self._chunked = self._until_eof = False
        self._body = []
        # one timer handle, not asyncio.timeout's task-cancelling machinery: most exchanges
        # end long before their deadline, and this runs once per record
        timer = None if deadline is None else loop.call_at(deadline, self._time_out)
        self.transport.write(request)
        try:
            response: Response = await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return response

    def _time_out(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())
        self.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: TransportError) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _deliver(self) -> None:
        waiter = self._waiter
        body = self._body
        if waiter is not None and not waiter.done():
            content = body[0] if len(body) == 1 else b"".join(body)
            waiter.set_result(Response(self._status, self._headers, content))


class ConnectionPool:
    """Keep-alive connections to one origin, at most ``max_connections`` at once.

    ``request`` waits for a free connection (or opens one), writes the request and reads the
    whole answer. A connection is reused once its answer was read completely and nothing came
    after it; one that timed out, was cancelled, broke or carried a malformed answer is closed.
    An answer whose body exceeds ``max_response_bytes``, or whose status line and headers exceed
    ``max_head``, is a ``ProtocolError``.
    """

    def __init__(
        self,
        origin: Origin,
        *,
        max_connections: int,
        ssl_context: ssl.SSLContext | None,
        idle_timeout: float = IDLE_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_head: int = MAX_HEAD,
    ) -> None:
        self.origin = origin
        self._new_connection = functools.partial(_Connection, max_response_bytes, max_head)
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._ssl = (ssl_context or ssl.create_default_context()) if origin.tls else None
        self._idle_timeout = idle_timeout
        self._closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeout: float | None,
        connect_timeout: float,
    ) -> Response:
        """One exchange, all of it (waiting for a connection included) within ``timeout``
        seconds unless it is ``None``; connecting alone within ``connect_timeout`` either way.
        Raises ``TransportError``, ``OSError`` (``ssl.SSLError`` among them) or
        ``TimeoutError``."""
        origin = self.origin
        request = _head(method, origin.prefix + target, origin.host_header, headers, body)
        if body:
            request += body
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._slots.locked():  # all connections busy: wait, within the deadline
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            if self._closed:
                raise ConnectionClosed("the client is closed")
            conn = self._idle_connection()
            reused = conn is not None
            if conn is None:
                conn = await self._connect(deadline, connect_timeout)
            try:
                response = await conn.exchange(request, deadline)
            except ConnectionClosed:
                conn.abort()
                if not (reused and method == "GET"):
                    raise
                # a reused connection the server had closed while idle: once more on a new one
                conn = await self._connect(deadline, connect_timeout)
                try:
                    response = await conn.exchange(request, deadline)
                except BaseException:
                    conn.abort()
                    raise
            except BaseException:  # a timeout, a cancellation: the answer may still come
                conn.abort()
                raise
            if conn.reusable and not conn.closed and not self._closed:
                conn.idle_since = loop.time()
                self._idle.append(conn)
            else:
                conn.close()
            return response
        finally:
            self._slots.release()

    def _idle_connection(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and asyncio.get_running_loop().time() - conn.idle_since < (
                self._idle_timeout
            ):
                return conn
            conn.close()
        return None

    async def _connect(self, deadline: float | None, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = self.origin
        until = loop.time() + timeout
        async with asyncio.timeout_at(until if deadline is None else min(deadline, until)):
            _, conn = await loop.create_connection(
                self._new_connection,
                origin.host,
                origin.port,
                ssl=self._ssl,
                server_hostname=origin.host if self._ssl is not None else None,
            )
        return conn

    async def aclose(self) -> None:
        """Close every idle connection; requests under way end with their connection."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # let the transports close
