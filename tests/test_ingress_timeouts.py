"""Which timeout each call gets: as in Go, ``request`` and ``attach`` wait as long as the
invocation runs unless the client or the call sets a timeout; ``send``, ``output`` and ``health``
wait ``DEFAULT_TIMEOUT``. Against an aiohttp test server that answers after a delay, with the
default shrunk so the tests stay fast. Unit speed: no Restate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.ingress import Client, IngressError, IngressTimeout, SyncClient
from bridge.ingress import _client as client_module

SLOW = 0.4  # how long every answer takes
SHORT = 0.1  # the shrunk default, and explicit timeouts below


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(SLOW)
        if request.path.endswith("/send"):
            doc = b'{"invocationId": "inv_1", "status": "Accepted"}'
            return web.Response(status=202, body=doc, content_type="application/json")
        return web.Response(body=b'"done"', content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture(autouse=True)
def short_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "DEFAULT_TIMEOUT", SHORT)


Call = Callable[[Client], Awaitable[Any]]
CALLS: dict[str, tuple[Call, bool]] = {  # name: (call, waits as long as the invocation runs)
    "request": (lambda c: c.service("S", "h").request("x"), True),
    "attach": (lambda c: c.invocation("inv_1").attach(), True),
    "attach_by_key": (lambda c: c.service_invocation("S", "h", "a b").attach(), True),
    "workflow_attach": (lambda c: c.workflow_handle("W", "1").attach(), True),
    "send": (lambda c: c.service("S", "h").send("x"), False),
    "output": (lambda c: c.invocation("inv_1").output(), False),
    "output_by_key": (lambda c: c.service_invocation("S", "h", "a b").output(), False),
}


@pytest.mark.parametrize("name", CALLS)
async def test_without_any_timeout_set(url: str, name: str) -> None:
    call, waits = CALLS[name]
    async with Client(url) as client:
        if waits:
            assert await call(client) is not None
        else:
            with pytest.raises(IngressTimeout):
                await call(client)


@pytest.mark.parametrize("name", CALLS)
async def test_a_client_timeout_applies_to_every_call(url: str, name: str) -> None:
    call, _ = CALLS[name]
    async with Client(url, timeout=SHORT) as client:
        with pytest.raises(IngressTimeout):
            await call(client)


@pytest.mark.parametrize("name", CALLS)
async def test_a_client_without_timeout_waits_for_every_call(url: str, name: str) -> None:
    call, _ = CALLS[name]
    async with Client(url, timeout=None) as client:
        assert await call(client) is not None


async def test_a_call_timeout_beats_the_client_and_the_default(url: str) -> None:
    async with Client(url, timeout=SHORT) as client:
        assert await client.service("S", "h").request("x", timeout=None) == "done"
        assert (await client.service("S", "h").send("x", timeout=5)).invocation_id == "inv_1"
        assert await client.invocation("inv_1").output(timeout=5) == "done"
    async with Client(url) as client:
        with pytest.raises(IngressTimeout):
            await client.service("S", "h").request("x", timeout=SHORT)
        with pytest.raises(IngressTimeout):
            await client.invocation("inv_1").attach(timeout=SHORT)


async def test_an_ingress_timeout_is_a_builtin_timeout_error(url: str) -> None:
    async with Client(url) as client:
        with pytest.raises(TimeoutError) as info:  # the builtin, as asyncio.timeout raises
            await client.service("S", "h").request("x", timeout=SHORT)
    exc = info.value
    assert isinstance(exc, IngressTimeout)
    assert isinstance(exc, IngressError)
    assert exc.retryable
    assert "0.1 s" in str(exc)


async def test_the_sync_client_has_the_same_defaults(url: str) -> None:
    def script() -> None:  # in a thread: this test's loop serves the answers
        with SyncClient(url) as client:
            assert client.service("S", "h").request("x") == "done"
            with pytest.raises(IngressTimeout):
                client.service("S", "h").send("x")
            with pytest.raises(TimeoutError):
                client.invocation("inv_1").attach(timeout=SHORT)

    await asyncio.wait_for(asyncio.to_thread(script), 10)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "5", True])
async def test_bad_timeouts_are_refused_before_sending(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        Client(timeout=bad)
    async with Client("http://127.0.0.1:9") as client:
        with pytest.raises((ValueError, TypeError)):
            await client.service("S", "h").request("x", timeout=bad)
        with pytest.raises((ValueError, TypeError)):
            await client.invocation("inv_1").attach(timeout=bad)
