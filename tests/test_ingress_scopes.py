"""The ingress client's scoped targets and limit keys: the paths and headers it sends, and what it
refuses before sending. Against an aiohttp test server in the same event loop: unit speed. (The
same calls against a Restate server with scopes switched on: ``tests/test_bridge_scopes.py``.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from aiohttp import web

from bridge.ingress import Client, InvalidRequest, SyncClient
from tests.helpers import catch_all_server


@dataclass
class Seen:
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class Server:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.partition("?")[0]
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(Seen(raw_path, request.query_string, headers))
        if "/send" in raw_path:
            doc = b'{"invocationId": "inv_1", "status": "Accepted"}'
            return web.Response(status=202, body=doc, content_type="application/json")
        return web.json_response("called")


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


@pytest.mark.parametrize(
    ("make", "send_path", "call_path"),
    [
        (
            lambda c: c.service("Greeter", "greet", scope="acme"),
            "/restate/scope/acme/send/Greeter/greet",
            "/restate/scope/acme/call/Greeter/greet",
        ),
        (
            lambda c: c.object("Recorder", "acct/7", "record", scope="acme"),
            "/restate/scope/acme/send/Recorder/acct%2F7/record",
            "/restate/scope/acme/call/Recorder/acct%2F7/record",
        ),
        (
            lambda c: c.workflow("Signup", "user 42", scope="t.1"),
            "/restate/scope/t.1/send/Signup/user%2042/run",
            "/restate/scope/t.1/call/Signup/user%2042/run",
        ),
        (
            lambda c: c.service("Greeter", "greet"),
            "/Greeter/greet/send",
            "/Greeter/greet",
        ),
        (
            lambda c: c.object("Recorder", "k", "record", scope=None),
            "/Recorder/k/record/send",
            "/Recorder/k/record",
        ),
    ],
)
async def test_scoped_targets_use_the_scope_paths(
    server: Server, client: Client, make: object, send_path: str, call_path: str
) -> None:
    target = make(client)  # type: ignore[operator]
    assert target.send_path == send_path
    assert target.call_path == call_path
    await target.send({"n": 1})
    await target.request({"n": 1})
    assert [s.path for s in server.seen] == [send_path, call_path]


async def test_a_scope_is_percent_encoded_as_one_segment(server: Server, client: Client) -> None:
    # Restate refuses such a scope (400), but it must arrive as one segment to be refused
    await client.service("Greeter", "greet", scope="a/b c").send("x")
    assert server.seen[0].path == "/restate/scope/a%2Fb%20c/send/Greeter/greet"


async def test_send_url_and_delay_with_a_scope(client: Client) -> None:
    target = client.object("Recorder", "k", "record", scope="acme")
    assert target.send_url(delay=timedelta(seconds=2)) == (
        f"{client.url}/restate/scope/acme/send/Recorder/k/record?delay=2000ms"
    )


async def test_a_delayed_scoped_send_carries_the_delay(server: Server, client: Client) -> None:
    await client.service("Greeter", "greet", scope="s").send("x", delay=timedelta(seconds=1))
    assert server.seen[0].path == "/restate/scope/s/send/Greeter/greet"
    assert server.seen[0].query == "delay=1000ms"


async def test_limit_key_goes_in_its_header_over_any_the_caller_passed(
    server: Server, client: Client
) -> None:
    target = client.object("Recorder", "k", "record", scope="acme")
    await target.send("x", limit_key="acme/u1", headers={"X-Restate-Limit-Key": "forged"})
    await target.request("x", limit_key="acme", idempotency_key="i-1")
    sent, called = server.seen
    assert sent.headers["x-restate-limit-key"] == "acme/u1"
    assert list(sent.headers).count("x-restate-limit-key") == 1
    assert called.headers["x-restate-limit-key"] == "acme"
    assert called.headers["idempotency-key"] == "i-1"


async def test_no_limit_key_sends_no_header(server: Server, client: Client) -> None:
    await client.service("Greeter", "greet", scope="acme").send("x")
    assert "x-restate-limit-key" not in server.seen[0].headers


async def test_a_limit_key_without_a_scope_is_refused_before_sending(
    server: Server, client: Client
) -> None:
    with pytest.raises(ValueError, match="limit_key needs a scoped target"):
        await client.service("Greeter", "greet").send("x", limit_key="acme")
    with pytest.raises(ValueError, match="limit_key needs a scoped target"):
        await client.object("Recorder", "k", "get").request(limit_key="acme")
    assert server.seen == []


@pytest.mark.parametrize("limit_key", ["a\r\nx-injected: 1", "ünï", "tab\there"])
async def test_a_limit_key_no_header_can_carry_is_an_invalid_request(
    server: Server, client: Client, limit_key: str
) -> None:
    with pytest.raises(InvalidRequest, match="limit key"):
        await client.service("Greeter", "greet", scope="s").send("x", limit_key=limit_key)
    assert server.seen == []


@pytest.mark.parametrize(
    ("scope", "error"), [("", ValueError), (7, TypeError), (b"acme", TypeError)]
)
def test_a_scope_that_names_nothing_is_refused_at_once(scope: object, error: type) -> None:
    c = Client("http://ingress")
    with pytest.raises(error):
        c.service("Greeter", "greet", scope=scope)  # type: ignore[arg-type]
    with pytest.raises(error):
        c.object("Recorder", "k", "record", scope=scope)  # type: ignore[arg-type]
    with pytest.raises(error):
        c.workflow("Signup", "w", scope=scope)  # type: ignore[arg-type]


async def test_a_limit_key_of_the_wrong_type_is_a_type_error(client: Client) -> None:
    with pytest.raises(TypeError, match="limit_key must be str"):
        await client.service("Greeter", "greet", scope="s").send("x", limit_key=5)  # type: ignore[arg-type]


async def test_the_blocking_client_passes_scope_and_limit_key(server: Server) -> None:
    def use() -> None:  # in a thread: the test server answers on this test's event loop
        with SyncClient(server.url, timeout=2.0) as sync:
            target = sync.object("Recorder", "k", "record", scope="acme")
            assert target.scope == "acme"
            assert target.send_url() == f"{server.url}/restate/scope/acme/send/Recorder/k/record"
            target.send("x", limit_key="acme/u1")
            assert sync.service("Greeter", "greet", scope="acme").request("y", limit_key="acme")
            sync.workflow("Signup", "w", scope="acme").send("z")

    await asyncio.to_thread(use)
    assert [s.path for s in server.seen] == [
        "/restate/scope/acme/send/Recorder/k/record",
        "/restate/scope/acme/call/Greeter/greet",
        "/restate/scope/acme/send/Signup/w/run",
    ]
    assert [s.headers.get("x-restate-limit-key") for s in server.seen] == [
        "acme/u1",
        "acme",
        None,
    ]
