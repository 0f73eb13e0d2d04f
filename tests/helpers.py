"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.ingress import Client, IngressTimeout

T = TypeVar("T")


def unique(prefix: str) -> str:
    """A name no other test uses: topics, group ids and object keys live for the session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 30
) -> Any:
    """Poll ``probe`` until it returns ``expected`` and return it; fail on timeout.

    Kept for old callers (``assert await eventually(p, x) == x``); new code uses :func:`until`.
    """
    return await until(probe, lambda v: v == expected, f"equal to {expected!r:.200}", timeout)


async def until(
    probe: Callable[[], Awaitable[T] | T],
    done: Callable[[T], bool],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.2,
) -> T:
    """Poll ``probe`` until ``done(value)``; fail naming ``what`` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(value):  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout:.0f}s; last: {value!r:.1500}")
        await asyncio.sleep(interval)


def recorded(client: Client, key: str) -> Callable[[], Awaitable[Any]]:
    """A probe of what the ``Recorder`` object ``key`` has received.

    A read that Restate leaves unanswered (it stalls now and then late in a long, loaded run) is
    reported as such and polled again: the oracle's hiccup is not the bridge's failure, and the
    final state must still be the expected one."""

    async def probe() -> Any:
        try:
            return await client.object("Recorder", key, "get").request()
        except IngressTimeout as exc:
            return f"no answer: {exc}"

    return probe


def route(**fields: object) -> str:
    """One ``[[routes]]`` table from keyword arguments; dicts become inline tables."""
    lines = ["[[routes]]"]
    for name, value in fields.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{name} = {{ {inner} }}")
        else:
            lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def recorder(topic: str, *, name: str = "rec", key: str = "{key}", **fields: object) -> str:
    """A route to the ``Recorder`` object ``key`` (a template), which keeps every input it gets."""
    return route(
        name=name,
        topic=topic,
        target="object",
        service="Recorder",
        handler="record",
        key=key,
        **fields,
    )


def signup_workflow(topic: str, **fields: object) -> str:
    """A route named ``signup`` starting the ``Signup`` workflow: its id the value's ``user``,
    its input the value's ``email``."""
    return route(
        name="signup",
        topic=topic,
        target="workflow",
        service="Signup",
        handler="run",
        key="{value.user}",
        body="{value.email}",
        **fields,
    )


def missing_service(topic: str, kind: str) -> str:
    """A route named ``missing`` for records with header ``kind``, to a service Restate does not
    know: its ingress answers 404, retried for ``unknown_target_grace``, then dead-lettered."""
    return route(
        name="missing",
        topic=topic,
        target="service",
        service="NoSuchService",
        handler="run",
        match={"header.kind": kind},
    )


def messages_total(samples: dict[str, float], topic: str, route_name: str, outcome: str) -> float:
    key = (
        f'restate_bridge_messages_total{{outcome="{outcome}",route="{route_name}",topic="{topic}"}}'
    )
    return samples.get(key, 0.0)


async def answer_cut_short(request: web.Request, status: int, body: bytes) -> web.StreamResponse:
    """For fake HTTP servers: announce ``body``, send only part of it, close the connection."""
    resp = web.StreamResponse(status=status)
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    assert request.transport is not None
    request.transport.close()
    return resp


async def recorded_as(client: Client, key: str, expected: list[Any], timeout: float = 60) -> None:
    """The ``Recorder`` object ``key`` ends up holding exactly ``expected``; fail otherwise."""
    await until(
        recorded(client, key), lambda got: got == expected, f"{key} = {expected!r:.300}", timeout
    )


def hold_for(seconds: float) -> Callable[[Any], bool]:
    """A ``done`` for :func:`until` that watches a value for ``seconds`` (the probe asserts)."""
    end = time.monotonic() + seconds
    return lambda _: time.monotonic() >= end


@contextlib.asynccontextmanager
async def catch_all_server(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """An aiohttp test server answering every method and path with ``handle``; its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
