"""The ingress transport against a hostile server: a raw asyncio server that answers the first
request with exactly the bytes a case gives (at once, in drips, or without end) and every later
request honestly, with an answer naming that request.

Each case sends two POSTs over one connection slot (``max_connections=1``) and asserts:

- the first gets the right answer, or a :class:`ProtocolError` / :class:`ConnectionClosed`;
- the second gets *its own* answer (the server's for request 1), never bytes the first one left
  behind; a connection that carried anything malformed or extra is never reused;
- memory stays bounded (``tracemalloc`` peak, against limits made small for the test, while the
  endless cases would write 32 MiB) and so does CPU (a generous ceiling that catches a spin:
  the old parser looped forever on a chunk size of ``-1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from bridge.ingress import Client, ConnectError
from bridge.ingress._http import (
    MAX_INFORMATIONAL,
    ConnectionPool,
    Origin,
    ProtocolError,
    Response,
    TransportError,
)

pytestmark = pytest.mark.timeout(60)  # a parser that spins blocks the loop: wait_for cannot end it

ENDLESS_CAP = 32 * 1024 * 1024
"""What an endless answer writes at most, so that a client that never stops reading still ends."""
SMALL_BODY = 64 * 1024
SMALL_HEAD = 8 * 1024
MEMORY_CEILING = 4 * 1024 * 1024
"""Peak traced allocations allowed while reading one hostile answer with the small limits: the
limits, a few socket reads of 256 KiB, and slack; reading an endless answer breaks it by far."""
CPU_CEILING = 5.0


def answer(body: bytes, status: bytes = b"202 Accepted", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s" % (
        status,
        extra,
        len(body),
        body,
    )


def honest_body(n: int) -> bytes:
    return b'{"invocationId":"inv_%d","status":"Accepted"}' % n


SMUGGLED_BODY = b'{"invocationId":"inv_SMUGGLED","status":"Accepted"}'
SMUGGLED = answer(SMUGGLED_BODY)
FIRST = honest_body(0)


Pieces = Callable[[], Iterator[tuple[bytes, float]]]
"""An answer written piece by piece: (bytes, seconds to wait after writing them)."""


def drip(data: bytes, size: int = 1, pause: float = 0.0) -> Pieces:
    def pieces() -> Iterator[tuple[bytes, float]]:
        for i in range(0, len(data), size):
            yield data[i : i + size], pause

    return pieces


def endless(prefix: bytes, unit: bytes, pause: float = 0.0) -> Pieces:
    """``prefix``, then ``unit`` again and again (up to :data:`ENDLESS_CAP` bytes)."""

    def pieces() -> Iterator[tuple[bytes, float]]:
        yield prefix, 0.0
        block = unit * max(1, 16384 // len(unit)) if pause == 0 else unit
        for _ in range(ENDLESS_CAP // len(block)):
            yield block, pause

    return pieces


def later(*parts: tuple[bytes, float]) -> Pieces:
    return lambda: iter(parts)


@dataclass
class Hostile:
    """Answers request 0 with ``first`` (bytes, or pieces), then closes when ``close`` is set;
    answers every later request ``n`` with ``answer(honest_body(n))``."""

    first: bytes | Pieces
    close: bool = False
    port: int = 0
    requests: int = 0
    connections: int = 0
    written: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                n = self.requests
                self.requests += 1
                if n > 0:
                    writer.write(answer(honest_body(n)))
                    await writer.drain()
                    continue
                pieces = self.first if callable(self.first) else later((self.first, 0.0))
                for data, pause in pieces():
                    if writer.is_closing():
                        return
                    writer.write(data)
                    await writer.drain()
                    self.written += len(data)
                    if pause:
                        await asyncio.sleep(pause)
                if self.close:
                    return
        except (ConnectionError, OSError):
            return  # the client closed while we wrote: what a hostile answer should get
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def hostile(first: bytes | Pieces, close: bool = False) -> AsyncIterator[Hostile]:
    server = Hostile(first, close)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        srv.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv.wait_closed(), 1)


@dataclass
class Outcome:
    first: Response | TransportError | TimeoutError
    peak: int
    cpu: float


async def two_requests(
    server: Hostile,
    *,
    timeout: float | None = 5.0,
    max_response_bytes: int = SMALL_BODY,
    max_head: int = SMALL_HEAD,
    pause_between: float = 0.0,
) -> Outcome:
    """Request 0 (the hostile answer), then request 1, over one connection slot; request 1 must
    get its own answer whatever request 0 got."""
    p = ConnectionPool(
        Origin.parse(f"http://127.0.0.1:{server.port}"),
        max_connections=1,
        ssl_context=None,
        max_response_bytes=max_response_bytes,
        max_head=max_head,
    )
    first: Response | TransportError | TimeoutError
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        cpu = time.process_time()
        try:
            first = await asyncio.wait_for(
                p.request("POST", "/S/h/send", [], b"{}", timeout, 5.0), 30
            )
        except (TransportError, TimeoutError) as exc:
            first = exc
        cpu = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if pause_between:
        await asyncio.sleep(pause_between)
    second = await asyncio.wait_for(p.request("POST", "/S/h/send", [], b"{}", 5.0, 5.0), 10)
    assert (second.status, second.body) == (202, honest_body(1))  # its own, never request 0's
    assert server.requests == 2  # each request sent once
    await p.aclose()
    return Outcome(first, peak, cpu)


def assert_bounded(outcome: Outcome) -> None:
    assert outcome.peak < MEMORY_CEILING, f"{outcome.peak / 2**20:.1f} MiB read for one answer"
    assert outcome.cpu < CPU_CEILING


# -- answers that leave bytes behind ---------------------------------------------------------------


LEFTOVERS = {
    # the bytes, the body of the first (complete) answer in them
    "a second answer in the same write": (answer(FIRST) + SMUGGLED, FIRST),
    "a second answer after a chunked one": (
        b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (len(FIRST), FIRST)
        + SMUGGLED,
        FIRST,
    ),
    "a body on a 204": (b"HTTP/1.1 204 No Content\r\n\r\n" + SMUGGLED, b""),
    "a body on a 304": (
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n" + SMUGGLED,
        b"",
    ),
    "a body longer than its Content-Length": (
        b"HTTP/1.1 202 Accepted\r\ncontent-length: 10\r\n\r\n" + FIRST + SMUGGLED,
        FIRST[:10],
    ),
    "garbage after the answer": (answer(FIRST) + b"garbage", FIRST),
    "data after Connection: close": (
        answer(FIRST, extra=b"connection: close\r\n") + SMUGGLED,
        FIRST,
    ),
}


@pytest.mark.parametrize(("data", "body"), LEFTOVERS.values(), ids=LEFTOVERS.keys())
@pytest.mark.parametrize("how", ["one write", "two writes", "byte by byte"])
async def test_bytes_past_a_complete_answer_never_answer_the_next_request(
    data: bytes, body: bytes, how: str
) -> None:
    if how == "two writes":  # the answer, then what follows it: one read or two
        cut = data.index(SMUGGLED) if SMUGGLED in data else len(data) - 7
        first: bytes | Pieces = later((data[:cut], 0.0), (data[cut:], 0.0))
    else:
        first = drip(data) if how == "byte by byte" else data
    async with hostile(first) as server:
        outcome = await two_requests(server)
    # the first answer stands (it was complete); the smuggled one is nobody's
    assert isinstance(outcome.first, Response), outcome.first
    assert outcome.first.body == body
    assert server.connections == 2  # the connection that carried extra bytes was not reused
    assert_bounded(outcome)


async def test_an_answer_sent_to_an_idle_connection_is_nobodys() -> None:
    # the answer, then (while the connection idles in the pool) a whole second answer
    async with hostile(later((answer(FIRST), 0.05), (SMUGGLED, 0.0))) as server:
        outcome = await two_requests(server, pause_between=0.2)
    assert isinstance(outcome.first, Response)
    assert outcome.first.body == FIRST
    assert server.connections == 2


async def test_blank_lines_after_an_answer_in_a_later_read_close_the_connection() -> None:
    async with hostile(later((answer(FIRST), 0.05), (b"\r\n", 0.0))) as server:
        outcome = await two_requests(server, pause_between=0.2)
    assert isinstance(outcome.first, Response)
    assert server.connections == 2


# -- framing the parser refuses ------------------------------------------------------------------

CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"

MALFORMED = {
    # chunk sizes: signs, prefixes, separators, spaces, overflow, nothing
    **{
        f"chunk size {size!r}": CHUNKED + size + b"\r\nhello world\r\n0\r\n\r\n"
        for size in (b"-1", b"0x10", b"1_0", b"+1", b" 1", b"1 ", b"", b"ffffffffffffffffff")
    },
    "chunk data not followed by CRLF": CHUNKED + b"2\r\nhiXX0\r\n\r\n",
    # status lines
    **{
        f"status {status!r}": b"HTTP/1.1 %s OK\r\ncontent-length: 0\r\n\r\n" % status
        for status in (b"-99", b"99", b"0200", b"2000", b"000", b"999", b"600", b"20", b"abc")
    },
    "101 Switching Protocols, unasked": b"HTTP/1.1 101 Switching Protocols\r\n\r\nxx",
    "HTTP/2.0": b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    "HTTP/0.9": b"HTTP/0.9 200 OK\r\ncontent-length: 0\r\n\r\n",
    "HTTP/1.2": b"HTTP/1.2 200 OK\r\ncontent-length: 0\r\n\r\n",
    "RTSP": b"RTSP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    "ICE": b"ICE/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    "a blank line before the answer": b"\r\n" + answer(FIRST),
    "not HTTP at all": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    # the smuggling set
    "Content-Length and Transfer-Encoding": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "Transfer-Encoding and Content-Length": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n"
    ),
    "two equal Content-Lengths": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nhi"
    ),
    "two different Content-Lengths": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 7\r\n\r\nhi" + SMUGGLED
    ),
    "a Content-Length list": b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nhi",
    **{
        f"Content-Length {value!r}": b"HTTP/1.1 200 OK\r\ncontent-length: %s\r\n\r\nhi" % value
        for value in (b"-1", b"+2", b"0x2", b"2 2", b"", b"99999999999999999999999")
    },
    "an obs-folded Content-Length": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n 0\r\n\r\nhi" + b"x" * 18 + SMUGGLED
    ),
    "an obs-folded header": b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\tx-b: 2\r\ncontent-length: 0\r\n\r\n",
    "Transfer-Encoding twice": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    ),
    "Transfer-Encoding gzip (read until close)": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n" + SMUGGLED
    ),
    "Transfer-Encoding chunked, gzip": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    ),
    "Transfer-Encoding gzip, chunked": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    ),
    "Transfer-Encoding xchunked": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n"
    ),
    "a space before a header's colon": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding : chunked\r\ncontent-length: 2\r\n\r\nhi"
    ),
    "a header line without a colon": b"HTTP/1.1 200 OK\r\nno colon\r\ncontent-length: 0\r\n\r\n",
    "bare LF after the status line": b"HTTP/1.1 200 OK\ncontent-length: 0\r\n\r\n",
    "bare LF after a header": b"HTTP/1.1 200 OK\r\ncontent-length: 0\n\r\n",
    "bare LF ends the head": b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\n",
    "bare LF after a chunk size": CHUNKED + b"5\nhello\r\n0\r\n\r\n",
    "bare LF after chunk data": CHUNKED + b"5\r\nhello\n0\r\n\r\n",
    "bare CR": b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\rX",
    "NUL in a header value": b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 0\r\n\r\n",
    "NUL in a header name": b"HTTP/1.1 200 OK\r\nx\x00a: b\r\ncontent-length: 0\r\n\r\n",
    "DEL in a header value": b"HTTP/1.1 200 OK\r\nx-a: \x7f\r\ncontent-length: 0\r\n\r\n",
    "too many 1xx answers": b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INFORMATIONAL + 1)
    + answer(FIRST),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("how", ["one write", "byte by byte"])
async def test_malformed_answers_are_protocol_errors(data: bytes, how: str) -> None:
    async with hostile(drip(data) if how == "byte by byte" else data) as server:
        outcome = await two_requests(server)
    assert isinstance(outcome.first, ProtocolError), outcome.first
    assert server.connections == 2  # the connection was closed, not reused
    assert_bounded(outcome)


# -- answers that are odd but HTTP ---------------------------------------------------------------

ACCEPTED = {
    "a reason phrase left out": (b"HTTP/1.1 202 \r\ncontent-length: 2\r\n\r\nhi", b"hi", True),
    "chunk extensions and a trailer": (
        CHUNKED + b"2;name=value\r\nhi\r\n0\r\nx-trailer: 1\r\n\r\n",
        b"hi",
        True,
    ),
    f"{MAX_INFORMATIONAL} 1xx answers first": (
        b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" * MAX_INFORMATIONAL + answer(FIRST),
        FIRST,
        True,
    ),
    "HTTP/1.0 with a length": (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi", b"hi", False),
    "HTTP/1.0 keep-alive": (
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi",
        b"hi",
        True,
    ),
    "Connection: close": (answer(FIRST, extra=b"connection: close\r\n"), FIRST, False),
    "Connection: keep-alive, close": (
        answer(FIRST, extra=b"connection: keep-alive, close\r\n"),
        FIRST,
        False,
    ),
}


@pytest.mark.parametrize(("data", "body", "kept"), ACCEPTED.values(), ids=ACCEPTED.keys())
@pytest.mark.parametrize("how", ["one write", "byte by byte"])
async def test_odd_but_valid_answers(data: bytes, body: bytes, kept: bool, how: str) -> None:
    async with hostile(drip(data) if how == "byte by byte" else data) as server:
        outcome = await two_requests(server)
    assert isinstance(outcome.first, Response), outcome.first
    assert outcome.first.body == body
    assert "x-trailer" not in outcome.first.headers  # trailers are not headers
    assert server.connections == (1 if kept else 2)


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
async def test_a_body_delimited_by_the_close(version: bytes) -> None:
    async with hostile(b"HTTP/%s 200 OK\r\n\r\nthe whole body" % version, close=True) as server:
        outcome = await two_requests(server)
    assert isinstance(outcome.first, Response)
    assert outcome.first.body == b"the whole body"
    assert server.connections == 2


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
async def test_a_body_delimited_by_the_close_is_bounded_too(version: bytes) -> None:
    async with hostile(endless(b"HTTP/%s 200 OK\r\n\r\n" % version, b"x")) as server:
        outcome = await two_requests(server)
    assert isinstance(outcome.first, ProtocolError)
    assert "max_response_bytes" in str(outcome.first)
    assert_bounded(outcome)


# -- answers without end -------------------------------------------------------------------------

ENDLESS = {
    "a chunked body": endless(CHUNKED, b"4000\r\n" + b"x" * 0x4000 + b"\r\n"),
    "a chunked body in one-byte chunks": endless(CHUNKED, b"1\r\nx\r\n"),
    "one chunk that never ends": endless(CHUNKED + b"7fffffff\r\n", b"x"),
    "a chunk extension": endless(CHUNKED + b"1;ext=", b"x"),
    "a trailer": endless(CHUNKED + b"0\r\nx-trailer: ", b"x"),
    "trailers": endless(CHUNKED + b"0\r\n", b"x-trailer: 1\r\n"),
    "a header value": endless(b"HTTP/1.1 200 OK\r\nx-a: ", b"x"),
    "headers": endless(b"HTTP/1.1 200 OK\r\n", b"x-a: 1\r\n"),
    "a status line": endless(b"HTTP/1.1 200 ", b"x"),
    "1xx answers": endless(b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
    "a body longer than its Content-Length says": endless(
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (SMALL_BODY + 1), b"x"
    ),
    "a Content-Length of 2**62": endless(
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % 2**62, b"x"
    ),
}


@pytest.mark.parametrize("pieces", ENDLESS.values(), ids=ENDLESS.keys())
async def test_endless_answers_end_at_a_limit(pieces: Pieces) -> None:
    async with hostile(pieces) as server:
        outcome = await two_requests(server, timeout=None)  # no deadline: the limits end it
    assert isinstance(outcome.first, ProtocolError), outcome.first
    assert_bounded(outcome)
    assert server.written < ENDLESS_CAP  # the client stopped reading long before


async def test_the_default_limit_ends_an_endless_body() -> None:
    async with hostile(endless(CHUNKED, b"4000\r\n" + b"x" * 0x4000 + b"\r\n")) as server:
        started = time.monotonic()
        async with Client(f"http://127.0.0.1:{server.port}", timeout=None) as c:
            with pytest.raises(ConnectError) as info:
                await asyncio.wait_for(c.service("S", "h").send(), 30)
        assert time.monotonic() - started < CPU_CEILING * 2
    assert info.value.retryable
    assert "max_response_bytes (16777216)" in str(info.value)
    assert 16 * 2**20 < server.written < ENDLESS_CAP


# -- drips ---------------------------------------------------------------------------------------


async def test_an_answer_dripped_slowly_without_a_deadline_arrives() -> None:
    async with hostile(drip(answer(FIRST), size=3, pause=0.002)) as server:
        outcome = await two_requests(server, timeout=None)
    assert isinstance(outcome.first, Response)
    assert outcome.first.body == FIRST
    assert server.connections == 1


@pytest.mark.parametrize(
    "pieces",
    [
        drip(answer(FIRST), size=1, pause=0.05),  # a whole answer, too slowly
        endless(b"HTTP/1.1 200 OK\r\nx-a: ", b"x", pause=0.01),  # a head without end
        endless(CHUNKED, b"1\r\nx\r\n", pause=0.01),  # a body without end
    ],
    ids=["a slow answer", "an endless head", "an endless body"],
)
async def test_a_drip_ends_at_the_deadline(pieces: Pieces) -> None:
    async with hostile(pieces) as server:
        started = time.monotonic()
        outcome = await two_requests(server, timeout=0.3)
        assert isinstance(outcome.first, TimeoutError)
        assert time.monotonic() - started < 2.0
    assert server.connections == 2  # the timed-out connection was dropped


# -- through the client: a bad answer is a retryable error, never someone else's answer ---------


async def test_a_smuggled_answer_never_becomes_another_records_receipt() -> None:
    # the first send's answer carries a second one: the receipt of the second send is its own
    async with (
        hostile(answer(FIRST) + SMUGGLED) as server,
        Client(f"http://127.0.0.1:{server.port}", max_connections=1) as c,
    ):
        target = c.service("S", "h")
        first = await target.send(idempotency_key="record-0")
        second = await target.send(idempotency_key="record-1")
    assert (first.invocation_id, second.invocation_id) == ("inv_0", "inv_1")
    assert server.connections == 2


async def test_a_malformed_answer_is_retried_under_the_same_key() -> None:
    async with (
        hostile(CHUNKED + b"-1\r\n" + SMUGGLED) as server,
        Client(f"http://127.0.0.1:{server.port}", max_connections=1) as c,
    ):
        target = c.service("S", "h")
        with pytest.raises(ConnectError) as info:
            await target.send(idempotency_key="record-0")
        assert info.value.retryable  # the caller sends the record again, same key
        again = await target.send(idempotency_key="record-0")
    assert again.invocation_id == "inv_1"
    assert server.connections == 2


async def test_max_response_bytes_is_the_clients_to_set() -> None:
    body = b'{"invocationId":"inv_0","status":"Accepted","pad":"%s"}' % (b"x" * 200)
    async with (
        hostile(answer(body)) as server,
        Client(f"http://127.0.0.1:{server.port}", max_response_bytes=100) as c,
    ):
        with pytest.raises(ConnectError) as info:
            await c.service("S", "h").send()
    assert "max_response_bytes (100)" in str(info.value)
    with pytest.raises(ValueError, match="max_response_bytes"):
        Client("http://127.0.0.1:1", max_response_bytes=0)
