"""The ingress client's HTTP/1.1 transport (``bridge/ingress/_http.py``) against raw asyncio
servers that answer exactly the bytes a test gives: framing (Content-Length, chunked, until
close, 1xx), keep-alive and its limits, broken answers, timeouts and cancellation. Unit speed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from bridge.ingress import Client, ConnectError, IngressTimeout, InvalidRequest
from bridge.ingress._http import (
    MAX_HEAD,
    ConnectionClosed,
    ConnectionPool,
    InvalidHeader,
    InvalidURL,
    Origin,
    ProtocolError,
)

ACCEPTED = b'{"invocationId":"inv_1","status":"Accepted"}'
OK = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(ACCEPTED),
    ACCEPTED,
)


@dataclass
class RawServer:
    """Answers each request (its head and Content-Length body read) with ``answer(n)``, the
    n-th request's raw bytes; ``None`` closes the connection instead."""

    answer: Callable[[int], bytes | None] = lambda n: OK
    chunked_writes: bool = False
    """Write an answer one byte at a time."""
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    hold: asyncio.Event | None = None
    """When set up, answers wait until this event is set."""
    dropped_while_held: int = 0
    """Connections the client closed while their answer was held back."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if self.hold is not None:
                    held = asyncio.ensure_future(self.hold.wait())
                    eof = asyncio.ensure_future(reader.read(1))
                    await asyncio.wait({held, eof}, return_when=asyncio.FIRST_COMPLETED)
                    held.cancel()
                    if eof.done() and eof.result() == b"":
                        self.dropped_while_held += 1
                        return
                    eof.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await eof
                reply = self.answer(len(self.requests) - 1)
                if reply is None:
                    return
                if self.chunked_writes:
                    for i in range(len(reply)):
                        writer.write(reply[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    writer.write(reply)
                    await writer.drain()
        finally:
            self.open_now -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    yield server
    srv.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(srv.wait_closed(), 1)


def pool(raw: RawServer, max_connections: int = 4, idle_timeout: float = 15.0) -> ConnectionPool:
    origin = Origin.parse(f"http://127.0.0.1:{raw.port}")
    return ConnectionPool(
        origin, max_connections=max_connections, ssl_context=None, idle_timeout=idle_timeout
    )


async def post(p: ConnectionPool, timeout: float | None = 5.0, body: bytes = b"{}") -> int:
    response = await p.request("POST", "/S/h/send", [("Content-Type", "x/y")], body, timeout, 5.0)
    return response.status


# -- framing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("one_byte_at_a_time", [False, True])
async def test_a_content_length_answer_and_keep_alive(
    raw: RawServer, one_byte_at_a_time: bool
) -> None:
    raw.chunked_writes = one_byte_at_a_time
    p = pool(raw)
    for _ in range(3):
        response = await p.request("POST", "/S/h/send", [], b'{"a":1}', 5.0, 5.0)
        assert (response.status, response.body) == (202, ACCEPTED)
        assert response.headers["content-type"] == "application/json"
    assert raw.connections == 1  # one connection, kept alive
    first = raw.requests[0]
    assert first.startswith(b"POST /S/h/send HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % raw.port)
    assert b"Content-Length: 7\r\n\r\n" in first
    assert first.endswith(b'{"a":1}')
    await p.aclose()


async def test_a_chunked_answer_with_extensions_and_trailers(raw: RawServer) -> None:
    raw.answer = lambda n: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n"
    )
    raw.chunked_writes = True
    p = pool(raw)
    for _ in range(2):
        response = await p.request("GET", "/x", [], None, 5.0, 5.0)
        assert response.body == b"hello world"
    assert raw.connections == 1
    await p.aclose()


async def test_informational_answers_are_skipped(raw: RawServer) -> None:
    raw.answer = lambda n: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" + OK
    assert await post(pool(raw)) == 202


async def serve_once(answer: bytes) -> tuple[asyncio.Server, int]:
    """A server that reads one request head, writes ``answer`` and closes the connection."""

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(once, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def test_a_body_without_length_lasts_until_the_server_closes() -> None:
    srv, port = await serve_once(b"HTTP/1.0 200 OK\r\n\r\nthe whole body")
    p = ConnectionPool(
        Origin.parse(f"http://127.0.0.1:{port}"), max_connections=1, ssl_context=None
    )
    response = await p.request("GET", "/x", [], None, 5.0, 5.0)
    assert response.body == b"the whole body"
    assert p._idle == []  # a connection whose body ended with it is never reused
    srv.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"",
    ],
)
async def test_an_answer_cut_short_by_a_close_is_a_closed_connection(answer: bytes) -> None:
    srv, port = await serve_once(answer)
    p = ConnectionPool(
        Origin.parse(f"http://127.0.0.1:{port}"), max_connections=1, ssl_context=None
    )
    with pytest.raises(ConnectionClosed):
        await p.request("GET", "/x", [], None, 5.0, 5.0)
    srv.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nx: " + b"a" * (MAX_HEAD + 10),
    ],
)
async def test_answers_that_are_not_http_are_protocol_errors(raw: RawServer, answer: bytes) -> None:
    raw.answer = lambda n: answer
    p = pool(raw)
    with pytest.raises(ProtocolError):
        await p.request("GET", "/x", [], None, 5.0, 5.0)
    assert p._idle == []  # never reused


# -- requests that cannot be sent ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["notaurl", "ftp://h/", "http://", "http://[bad", "http://h:99999"])
def test_unusable_urls(url: str) -> None:
    with pytest.raises(InvalidURL):
        Origin.parse(url)


@pytest.mark.parametrize(
    ("url", "host_header", "prefix"),
    [
        ("http://restate:8080", b"restate:8080", ""),
        ("https://restate", b"restate", ""),
        ("http://restate:80/", b"restate", ""),
        ("https://cloud.example/base/", b"cloud.example", "/base"),
        ("http://[::1]:8080", b"[::1]:8080", ""),
        ("http://bücher.example:81", b"xn--bcher-kva.example:81", ""),
    ],
)
def test_origins(url: str, host_header: bytes, prefix: str) -> None:
    origin = Origin.parse(url)
    assert (origin.host_header, origin.prefix) == (host_header, prefix)


@pytest.mark.parametrize(
    "headers",
    [
        [("x-a", "v\r\nx-b: 1")],
        [("x-a", "nul\x00")],
        [("x-a", "bell\x07")],
        [("x-a\r\nx-b", "v")],
        [("", "v")],
        [("x a", "v")],
        [("x-ü", "v")],
    ],
)
async def test_headers_that_would_break_the_request_are_refused_unsent(
    raw: RawServer, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidHeader):
        await pool(raw).request("POST", "/S/h", headers, b"", 5.0, 5.0)
    assert raw.requests == []


async def test_a_tab_and_non_ascii_in_header_values_are_sent_as_utf8(raw: RawServer) -> None:
    await pool(raw).request("POST", "/S/h", [("x-a", "a\tb ü")], b"", 5.0, 5.0)
    assert b"x-a: a\tb \xc3\xbc\r\n" in raw.requests[0]


@pytest.mark.parametrize("target", ["/a b", "/a\r\nx", "/ü"])
async def test_targets_with_spaces_or_control_bytes_are_refused(
    raw: RawServer, target: str
) -> None:
    with pytest.raises(InvalidURL):
        await pool(raw).request("GET", target, [], None, 5.0, 5.0)
    assert raw.requests == []


# -- the pool -----------------------------------------------------------------------------------


async def test_never_more_connections_than_the_limit(raw: RawServer) -> None:
    raw.hold = asyncio.Event()
    p = pool(raw, max_connections=3)
    sends = [asyncio.ensure_future(post(p)) for _ in range(10)]
    await asyncio.sleep(0.2)
    assert raw.open_now == 3
    raw.hold.set()
    assert await asyncio.gather(*sends) == [202] * 10
    assert raw.most_open == 3
    assert raw.connections == 3  # reused, none opened beyond the limit
    await p.aclose()


async def test_waiting_for_a_connection_counts_against_the_timeout(raw: RawServer) -> None:
    raw.hold = asyncio.Event()
    p = pool(raw, max_connections=1)
    busy = asyncio.ensure_future(post(p, timeout=None))
    await asyncio.sleep(0.1)
    with pytest.raises(TimeoutError):
        await post(p, timeout=0.1)
    raw.hold.set()
    assert await busy == 202
    assert len(raw.requests) == 1  # the timed-out request never reached the server


async def test_a_timed_out_exchange_drops_its_connection(raw: RawServer) -> None:
    raw.hold = asyncio.Event()
    p = pool(raw)
    with pytest.raises(TimeoutError):
        await post(p, timeout=0.1)
    await asyncio.sleep(0.1)
    raw.hold.set()
    assert p._idle == []
    assert await post(p) == 202
    assert raw.connections == 2  # the late answer never reached the next request
    assert raw.dropped_while_held == 1  # the timed-out connection was closed, not left open


async def test_a_cancelled_exchange_drops_its_connection_and_frees_its_slot(raw: RawServer) -> None:
    raw.hold = asyncio.Event()
    p = pool(raw, max_connections=1)
    task = asyncio.ensure_future(post(p))
    await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    raw.hold.set()
    assert await post(p) == 202  # the slot came back
    assert raw.connections == 2
    assert raw.dropped_while_held == 1  # the cancelled exchange's connection was closed


async def test_idle_connections_expire(raw: RawServer) -> None:
    p = pool(raw, idle_timeout=0.05)
    await post(p)
    await asyncio.sleep(0.1)
    await post(p)
    assert raw.connections == 2


async def test_a_get_on_a_kept_alive_connection_the_server_dropped_is_sent_again(
    raw: RawServer,
) -> None:
    # the first connection answers once, then closes on the next request without answering
    # (as a server does whose idle timeout struck while the request was on its way)
    raw.answer = lambda n: None if n == 1 else OK
    p = pool(raw)
    assert (await p.request("GET", "/restate/health", [], None, 5.0, 5.0)).status == 202
    assert (await p.request("GET", "/restate/health", [], None, 5.0, 5.0)).status == 202
    assert (len(raw.requests), raw.connections) == (3, 2)


async def test_a_post_on_a_broken_connection_is_not_sent_twice(raw: RawServer) -> None:
    raw.answer = lambda n: OK if n == 0 else None  # the second request: closed unanswered
    p = pool(raw)
    assert await post(p) == 202
    with pytest.raises(ConnectionClosed):
        await post(p)
    assert len(raw.requests) == 2  # sent once: a POST is never repeated by the transport


async def test_a_closed_pool_refuses_new_requests(raw: RawServer) -> None:
    p = pool(raw)
    await post(p)
    await p.aclose()
    with pytest.raises(ConnectionClosed):
        await post(p)


# -- through the client: the translation ---------------------------------------------------------


async def test_the_client_translates_transport_failures(raw: RawServer) -> None:
    raw.answer = lambda n: b"garbage\r\n\r\n"
    async with Client(f"http://127.0.0.1:{raw.port}", timeout=2.0) as c:
        with pytest.raises(ConnectError) as info:
            await c.service("S", "h").send()
        assert "not an HTTP/1.x answer" in str(info.value)
        with pytest.raises(InvalidRequest):
            await c.service("S", "h").send(headers={"x a": "v"})
    raw.hold = asyncio.Event()
    async with Client(f"http://127.0.0.1:{raw.port}", timeout=0.1) as c:
        with pytest.raises(IngressTimeout) as timeout:
            await c.service("S", "h").send()
        assert "no answer within 0.1 s" in str(timeout.value)
    raw.hold.set()


# -- credentials in the URL ----------------------------------------------------------------------


def test_user_information_becomes_basic_auth_and_never_shows() -> None:
    origin = Origin.parse("https://bridge:s%40cret@restate.example:8443/base")
    assert origin.basic_auth == "Basic YnJpZGdlOnNAY3JldA=="  # bridge:s@cret
    assert origin.host_header == b"restate.example:8443"
    assert "cret" not in repr(origin)
    with pytest.raises(InvalidURL) as info:
        Origin.parse("ftp://bridge:secret@restate.example/")
    assert "secret" not in str(info.value)
    assert "***@restate.example" in str(info.value)


async def test_the_client_sends_the_urls_credentials_unless_it_has_a_token(raw: RawServer) -> None:
    url = f"http://bridge:secret@127.0.0.1:{raw.port}"
    async with Client(url) as c:
        await c.service("S", "h").send()
        assert "secret" not in repr(c)
    async with Client(url, token="t0k") as c:
        await c.service("S", "h").send()
    first, second = raw.requests
    assert b"Authorization: Basic YnJpZGdlOnNlY3JldA==\r\n" in first
    assert b"Authorization: Bearer t0k\r\n" in second
    assert b"Basic" not in second
