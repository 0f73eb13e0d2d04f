"""A small HTTP/1.1 client transport: keep-alive connections over asyncio protocols.

The ingress client needs little of HTTP: ``GET`` and ``POST`` with small bodies, answers with a
``Content-Length`` (or chunked), keep-alive, TLS, a connection limit and timeouts. A general
client pays for much more on every request (URL objects, multidicts, cookie jars, tracing hooks,
timer contexts): through aiohttp a ``/send`` cost the bridge about 0.07 ms of CPU, here about a
quarter of that (``bench/ingress_client.py``; README, "Performance").

Errors are this module's own (:class:`TransportError` and its subclasses) plus ``OSError``,
``ssl.SSLError`` and ``TimeoutError`` from the socket layer; the client translates them into
:mod:`._errors` in one place.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

MAX_HEAD = 64 * 1024
"""The longest status line plus headers accepted in an answer."""
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
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._length: int | None = None
        """Body bytes expected; ``-1``: chunked; ``None``: head not parsed yet."""
        self._chunks = bytearray()
        self._until_eof = False

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
            self._deliver(bytes(self._buffer))
            return
        why = f": {exc}" if exc else ""
        got = "before answering" if self._length is None else "in the middle of its answer"
        waiter.set_exception(ConnectionClosed(f"the server closed the connection {got}{why}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: a server talking out of turn
            self.reusable = False
            self.close()
            return
        self._buffer += data
        try:
            self._parse()
        except TransportError as exc:
            self.reusable = False
            if not self._waiter.done():
                self._waiter.set_exception(exc)
            self.close()

    # -- requests ---------------------------------------------------------------------------

    async def exchange(self, request: bytes, deadline: float | None) -> Response:
        """Write ``request`` and wait for its whole answer, until ``deadline`` (loop time) at
        the latest (then ``TimeoutError``, and the connection is dropped)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._length = None
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

    # -- parsing ----------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buffer
        while self._length is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError("the answer's headers are too long")
                return
            self._read_head(bytes(buf[:end]))
            del buf[: end + 4]
            if 100 <= self._status < 200:  # 100 Continue, 103 Early Hints: the answer follows
                self._length = None
                continue
        if self._until_eof:
            return
        if self._length >= 0:
            if len(buf) >= self._length:
                body = bytes(buf[: self._length])
                del buf[: self._length]
                self._deliver(body)
            return
        self._parse_chunks()

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
            raise ProtocolError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        try:
            status = int(status_line[9:12])
        except ValueError:
            raise ProtocolError(f"no status code in {status_line[:80]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ProtocolError(f"a header line without a colon: {line[:80]!r}")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        self._status, self._headers = status, headers
        connection = headers.get("connection", "").lower()
        if connection == "close" or (status_line[7:8] == b"0" and connection != "keep-alive"):
            self.reusable = False
        if status in (204, 304) or 100 <= status < 200:
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._length = -1
            self._chunks = bytearray()
        elif (length := headers.get("content-length")) is not None:
            if not length.isdigit():
                raise ProtocolError(f"a bad Content-Length: {length[:40]!r}")
            self._length = int(length)
        else:  # the body lasts until the server closes the connection
            self._length = 0
            self._until_eof = True
            self.reusable = False

    def _parse_chunks(self) -> None:
        buf = self._buffer
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return
            size_text = bytes(buf[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"a bad chunk size: {size_text[:40]!r}") from None
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return
                del buf[: trailer_end + 4]
                self._deliver(bytes(self._chunks))
                return
            if len(buf) < line_end + 2 + size + 2:
                return
            self._chunks += buf[line_end + 2 : line_end + 2 + size]
            del buf[: line_end + 2 + size + 2]

    def _deliver(self, body: bytes) -> None:
        self._until_eof = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, body))


class ConnectionPool:
    """Keep-alive connections to one origin, at most ``max_connections`` at once.

    ``request`` waits for a free connection (or opens one), writes the request and reads the
    whole answer. A connection is reused once its answer was read completely; one that timed
    out, was cancelled or broke is closed.
    """

    def __init__(
        self,
        origin: Origin,
        *,
        max_connections: int,
        ssl_context: ssl.SSLContext | None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.origin = origin
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
        Raises :class:`TransportError`, ``OSError`` (``ssl.SSLError`` among them) or
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
                _Connection,
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
