"""The ingress client's translation of transport failures, against an aiohttp test server in the
same event loop: requests that cannot be built, connections closed mid-response, timeouts,
``Retry-After`` of any shape. Unit speed: no Restate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bridge.ingress import (
    Client,
    ConnectError,
    IngressError,
    IngressTimeout,
    InvalidRequest,
    ResponseError,
)
from tests.helpers import answer_cut_short, catch_all_server


@dataclass
class Server:
    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)
    mode: str = "accept"
    retry_after: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        doc = b'{"invocationId": "inv_1", "status": "Accepted"}'
        if self.mode == "close_midway":
            return await answer_cut_short(request, 202, doc)
        if self.mode == "close_before":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=202)
        if self.mode == "slow":
            await asyncio.sleep(1)
        if self.mode == "429":
            return web.json_response(
                {"code": 429, "message": "busy"},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        return web.Response(status=202, body=doc, content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    async with catch_all_server(srv.handle) as url:
        srv.url = url
        yield srv


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    async with Client(server.url, timeout=2.0) as c:
        yield c


async def test_a_plain_send_works(server: Server, client: Client) -> None:
    receipt = await client.object("Ledger", "a", "append").send({"n": 1}, headers={"x-t": "1"})
    assert receipt.invocation_id == "inv_1"
    assert server.requests[0]["x-t"] == "1"


@pytest.mark.parametrize(
    "value", ["a\r\nx-injected: 1", "a\rb", "a\nb", "nul\x00", "bell\x07", "del\x7f"]
)
async def test_header_values_with_control_bytes_are_invalid_requests_never_sent(
    server: Server, client: Client, value: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        await client.object("Ledger", "a", "append").send({"n": 1}, headers={"x-trace": value})
    error = info.value
    assert not error.retryable
    assert error.reason == "invalid_request"
    assert error.status is None
    assert str(error).startswith("POST /Ledger/a/append/send: invalid request: ")
    assert isinstance(error.__cause__, ValueError)
    assert server.requests == []  # nothing reached the wire


async def test_a_header_name_with_cr_lf_is_an_invalid_request(
    server: Server, client: Client
) -> None:
    with pytest.raises(InvalidRequest):
        await client.service("S", "h").send(headers={"x-a\r\nx-b": "v"})
    assert server.requests == []


async def test_non_latin1_header_values_are_sent_as_utf8(server: Server, client: Client) -> None:
    # aiohttp encodes header values as UTF-8 (no UnicodeEncodeError); aiohttp's server decodes
    # them as UTF-8 too (Restate answers 400 to non-ASCII idempotency keys: the router checks)
    await client.service("S", "h").send(headers={"x-name": "ünï€"})
    assert server.requests[0]["x-name"] == "ünï€"


@pytest.mark.parametrize("url", ["http://[bad", "http://127.0.0.1:99999", "notaurl"])
async def test_an_invalid_url_is_an_invalid_request(url: str) -> None:
    async with Client(url, timeout=1.0) as c:
        with pytest.raises(InvalidRequest) as info:
            await c.service("S", "h").send()
    assert not info.value.retryable


@pytest.mark.parametrize("mode", ["close_midway", "close_before"])
async def test_a_connection_closed_before_the_whole_answer_is_a_retryable_connect_error(
    server: Server, client: Client, mode: str
) -> None:
    server.mode = mode
    with pytest.raises(ConnectError) as info:
        await client.service("S", "h").send()
    assert info.value.retryable
    assert info.value.reason == "connect"


async def test_a_slow_answer_is_a_timeout(server: Server, client: Client) -> None:
    server.mode = "slow"
    with pytest.raises(IngressTimeout) as info:
        await client.service("S", "h").send(timeout=0.05)
    assert info.value.retryable


@pytest.mark.parametrize(
    ("retry_after", "parsed"),
    [
        ("3", 3.0),
        ("1e12", 1e12),
        ("inf", None),
        ("nan", None),
        ("-5", 0.0),
        ("soon", None),
        ("Sat, 01 Jan 10000 00:00:00 GMT", None),
    ],
)
async def test_retry_after_of_any_shape_never_raises(
    server: Server, client: Client, retry_after: str, parsed: float | None
) -> None:
    server.mode, server.retry_after = "429", retry_after
    with pytest.raises(ResponseError) as info:
        await client.service("S", "h").send()
    assert info.value.retryable
    assert info.value.retry_after == parsed


def test_invalid_request_is_an_ingress_error() -> None:
    assert issubclass(InvalidRequest, IngressError)
    assert InvalidRequest("x").reason == "invalid_request"
