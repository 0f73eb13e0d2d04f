"""Retryable ingress answers (429 with Retry-After, 503) are retried, in order, without loss.

Restate does not shed load on demand, so a small HTTP gateway in front of the real ingress answers
the first sends with 429 or 503 and forwards the rest unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import pairwise

import aiohttp
import pytest
from aiohttp import web

from bridge.ingress import Client
from tests.conftest import BridgeFactory, Broker
from tests.helpers import eventually, messages_total, recorded, route, unique
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


@dataclass
class Gateway:
    """Refuses the first ``refuse`` sends with ``status``; forwards everything else."""

    upstream: str
    status: int = 429
    refuse: int = 0
    retry_after: str | None = None
    url: str = ""
    sends: list[tuple[float, int]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path.endswith("/send") and self.refuse > 0:
            self.refuse -= 1
            self.sends.append((time.monotonic(), self.status))
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.json_response(
                {"code": self.status, "message": "shedding load"},
                status=self.status,
                headers=headers,
            )
        skip = {"host", "content-length", "transfer-encoding", "connection"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, f"{self.upstream}{request.path_qs}", data=body, headers=headers
            ) as resp,
        ):
            payload = await resp.read()
            if request.path.endswith("/send"):
                self.sends.append((time.monotonic(), resp.status))
            return web.Response(body=payload, status=resp.status, content_type=resp.content_type)


@pytest.fixture
async def gateway(restate: RestateServer) -> AsyncIterator[Gateway]:
    gw = Gateway(restate.ingress_url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gw.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gw.url = f"http://127.0.0.1:{port}"
    yield gw
    await runner.cleanup()


@pytest.mark.parametrize(("status", "retry_after"), [(429, "1"), (503, None)])
async def test_retryable_answers_are_retried_in_order(
    broker: Broker,
    bridges: BridgeFactory,
    client: Client,
    gateway: Gateway,
    status: int,
    retry_after: str | None,
) -> None:
    topic, key = unique("shed"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic])
    gateway.status, gateway.retry_after = status, retry_after
    bridge = bridges.start(
        route(name="shed", topic=topic, target="object", service="Recorder",
              handler="record", key="{key}"),
        group_id=unique("g"),
        ingress_url=gateway.url,
        wait_ready=False,  # the gateway runs in this event loop: wait without blocking it
    )  # fmt: skip
    assert await eventually(lambda: asyncio.to_thread(bridge.ready), True, timeout=60)
    gateway.refuse = 3
    await produce(
        broker.bootstrap_servers, topic, [Message(key.encode(), str(i).encode()) for i in range(5)]
    )
    assert await eventually(recorded(client, key), [0, 1, 2, 3, 4]) == [0, 1, 2, 3, 4]
    samples = bridge.metrics()
    reason = "http_429" if status == 429 else "http_5xx"
    errors = f'restate_bridge_ingress_errors_total{{reason="{reason}",route="shed"}}'
    assert samples[errors] == 3
    assert samples['restate_bridge_retries_total{route="shed"}'] == 3
    assert messages_total(samples, topic, "shed", "accepted") == 5
    statuses = [s for _, s in gateway.sends]
    assert statuses[:4] == [status, status, status, 202]
    if retry_after is not None:
        # every retry after a 429 waited at least Retry-After (1 s), though backoff starts at 0.1 s
        times = [t for t, _ in gateway.sends[:4]]
        gaps = [b - a for a, b in pairwise(times)]
        assert min(gaps) >= 0.95, gaps
