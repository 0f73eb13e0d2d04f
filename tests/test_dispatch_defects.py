"""Reproductions of known defects of bridge.dispatch (and one of bridge.worker), in process: the
fake ingress of tests/test_dispatch.py (real HTTP, same event loop), no broker, no Restate.

Each test asserts the behaviour the bridge should guarantee (its docstring names it), so each
fails until its defect is fixed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.config import BatchConfig
from bridge.core.batching import Batch, encode_item
from bridge.core.record import Record, RecordView
from bridge.core.routing import Invocation
from bridge.core.status_policy import parse_statuses
from bridge.deliver.lease import PendingRecord
from tests import test_dispatch
from tests.helpers import until
from tests.test_dispatch import (
    TOPIC,
    TP,
    Answer,
    FakeIngress,
    Harness,
    HarnessFactory,
    blocked,
    route_config,
    settle,
)

harness = test_dispatch.harness  # the fixture, over this module's ``ingress``

LONG_WAIT = timedelta(seconds=30)
"""A ``max_wait`` no test waits for: batches close when full or flushed."""


@dataclass
class BodyIngress(FakeIngress):
    """The fake ingress of tests/test_dispatch.py that also reads batch bodies, and serves
    scoped sends too (``/restate/scope/{scope}/send/...``)."""

    batches: list[tuple[str, str, list[int]]] = field(default_factory=list)
    """Per request in arrival order: object key, idempotency key, the items' offsets."""
    applied_offsets: dict[str, list[int]] = field(default_factory=dict)
    """Per object key, the offsets of the items of each applied request, in the order applied."""

    def offsets(self, key: str | None = None) -> list[list[int]]:
        return [offsets for k, _, offsets in self.batches if key is None or k == key]

    def idempotency_keys(self) -> list[str]:
        return [idem for _, idem, _ in self.batches]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        idem = request.headers.get("idempotency-key", "")
        raw = await request.read()
        items = json.loads(raw) if raw else []
        offsets = [i["offset"] for i in items] if isinstance(items, list) else []
        self.batches.append((key, idem, offsets))
        fresh = idem not in self.idempotency
        response = await super().handle(request)
        if response.status == 202 and fresh:
            self.applied_offsets.setdefault(key, []).extend(offsets)
        return response


@pytest.fixture
async def ingress() -> AsyncIterator[BodyIngress]:
    fake = BodyIngress()
    app = web.Application()
    app.router.add_post("/{service}/{key}/{handler}/send", fake.handle)
    app.router.add_post("/restate/scope/{scope}/send/{service}/{key}/{handler}", fake.handle)
    server = TestServer(app)
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


def batched(
    h: Harness,
    offset: int,
    key: str,
    batch: BatchConfig,
    *,
    route: str = "Ledger",
    scope: str | None = None,
    limit_key: str | None = None,
) -> PendingRecord:
    """Submit one record of a batch route to object ``key`` of service ``Ledger`` (its lane is
    the key's: ``("Ledger", key)``, whatever the route)."""
    rec = Record(TP.topic, TP.partition, offset, 0, key.encode(), b'{"n": 1}')
    pending = h.pending(rec)
    inv = Invocation(
        route=route,
        kind="object",
        service="Ledger",
        handler="apply",
        key=key,
        body=encode_item(RecordView(rec)),
        content_type="application/json",
        delay=None,
        idempotency_key=None,
        lane=("Ledger", key),
        batch=batch,
        scope=scope,
        limit_key=limit_key,
    )
    h.dispatcher.submit(pending, inv)
    return pending


def single(h: Harness, offset: int, key: str, lane: tuple[Any, ...]) -> PendingRecord:
    """Submit one record of route ``Ledger`` for object ``key`` with the given lane."""
    rec = Record(TP.topic, TP.partition, offset, 0, key.encode(), b'{"n": 1}')
    pending = h.pending(rec)
    inv = Invocation(
        route="Ledger",
        kind="object",
        service="Ledger",
        handler="append",
        key=key,
        body=b'{"n": 1}',
        content_type="application/json",
        delay=None,
        idempotency_key=f"{TP.topic}-{TP.partition}-{offset}",
        headers={"x-seq": str(offset)},
        lane=lane,
    )
    h.dispatcher.submit(pending, inv)
    return pending


def finished(h: Harness) -> list[int]:
    return sorted(p.record.offset for p in h.finished)


# -- 1. batches and lanes -----------------------------------------------------------------------


@pytest.mark.parametrize("split", ["limit_key", "two_routes"])
async def test_a_keys_batches_reach_the_ingress_in_offset_order(
    ingress: BodyIngress, harness: HarnessFactory, split: str
) -> None:
    """Per key (lane), invocations reach the ingress in offset order, also when the key's records
    fall into different batch groups (a ``limit_key`` templated from the value, or two batch
    routes to one object service): a batch closes when its lane's next record cannot join it."""
    h = harness()
    two = BatchConfig(max_records=2, max_wait=LONG_WAIT)
    for offset in range(4):
        if split == "limit_key":
            batched(h, offset, "a", two, scope="s", limit_key=f"tenant-{offset % 2}")
        else:
            batched(h, offset, "a", two, route=f"r{offset % 2}")
    h.dispatcher.flush()
    await h.finished_offsets(0, 1, 2, 3)
    sent = [offset for offsets in ingress.offsets("a") for offset in offsets]
    assert sent == [0, 1, 2, 3], f"key a's records reached the ingress as {ingress.offsets('a')}"


# -- 2. batch identity --------------------------------------------------------------------------


async def test_batches_with_other_records_over_the_same_range_get_other_idempotency_keys(
    ingress: BodyIngress, harness: HarnessFactory
) -> None:
    """A batch's idempotency key names its records, not only its first and last offsets: a batch
    of offsets {0, 2} and one of {0, 1, 2} (after a ``match`` change) are different invocations,
    so the second is not answered as a duplicate and record 1 is not finished unsent. A
    contiguous batch keeps the key ``topic-partition-first-last:route``."""
    h = harness()
    five = BatchConfig(max_records=5, max_wait=LONG_WAIT)
    batched(h, 0, "a", five)
    batched(h, 2, "a", five)  # the old match skipped record 1
    h.dispatcher.flush()
    await h.finished_offsets(0, 2)
    h.finished.clear()
    for offset in range(3):  # read again (a restart before the commit), the new match takes 1
        batched(h, offset, "a", five)
    h.dispatcher.flush()
    await h.finished_offsets(0, 1, 2)
    assert ingress.offsets() == [[0, 2], [0, 1, 2]]
    sparse, contiguous = ingress.idempotency_keys()
    assert contiguous == "orders-0-0-2:Ledger"
    assert sparse != contiguous, f"both batches were sent as {contiguous!r}"
    assert 1 in ingress.applied_offsets["a"], "record 1 finished as a duplicate, never applied"


def test_a_batch_idempotency_key_names_its_members() -> None:
    """``Batch.idempotency_key()`` differs for different member offsets over the same range, and
    is ``topic-partition-first-last:route`` for a contiguous batch."""
    deadline = 0.0
    contiguous: Batch[int] = Batch("g", "r", "orders", 0, deadline, offsets=[0, 1, 2])
    sparse: Batch[int] = Batch("g", "r", "orders", 0, deadline, offsets=[0, 2])
    assert contiguous.idempotency_key() == "orders-0-0-2:r"
    assert sparse.idempotency_key() != contiguous.idempotency_key()


# -- 3. a batch that may have been accepted ----------------------------------------------------


async def test_a_batch_that_may_have_been_accepted_is_never_split_under_new_keys(
    ingress: BodyIngress, harness: HarnessFactory
) -> None:
    """A batch whose answer was lost (the connection closed after the request was written) and
    whose retry is refused with a 4xx (a proxy's 413) is not split into single-record sends
    under new idempotency keys (every record would run twice): its records are dead-lettered,
    with a reason, and nothing more is sent."""
    h = harness()
    ingress.script("a", Answer(close_midway=True), Answer(413))
    three = BatchConfig(max_records=3, max_wait=LONG_WAIT)
    for offset in range(3):
        batched(h, offset, "a", three)
    await h.finished_offsets(0, 1, 2)
    await settle(h)
    assert ingress.offsets("a") == [[0, 1, 2], [0, 1, 2]], (
        f"sent after the 413: {ingress.offsets('a')[2:]} (applied {ingress.applied_offsets})"
    )
    assert sorted(d.record.offset for d in h.dead) == [0, 1, 2]
    assert all(d.reason for d in h.dead)


# -- 4. holds -----------------------------------------------------------------------------------


def _block_on_400(harness: HarnessFactory) -> Harness:
    block_on = parse_statuses([400], "block_on")[0]
    return harness(routes=(route_config("Ledger", block_on=block_on),))


async def test_skipping_a_batch_blocked_by_block_on_finishes_every_record(
    ingress: BodyIngress, harness: HarnessFactory
) -> None:
    """Releasing with ``skip`` a batch that the route's ``block_on`` blocked finishes every
    record of the batch (the partition commits past it), not only its first."""
    h = _block_on_400(harness)
    ingress.script("a", 400)
    three = BatchConfig(max_records=3, max_wait=LONG_WAIT)
    for offset in range(3):
        batched(h, offset, "a", three)
    await blocked(h)
    await h.release(TP, "skip")
    await until(lambda: finished(h), lambda got: got == [0, 1, 2], "0, 1, 2 finished", 1.0, 0.002)


async def test_a_batch_blocked_by_block_on_is_held_with_all_its_records(
    ingress: BodyIngress, harness: HarnessFactory
) -> None:
    """What the operator sees held (and what a skip parks) is the whole blocked batch."""
    h = _block_on_400(harness)
    ingress.script("a", 400)
    three = BatchConfig(max_records=3, max_wait=LONG_WAIT)
    for offset in range(3):
        batched(h, offset, "a", three)
    await blocked(h)
    (held,) = h.held(TP)
    assert [r.offset for r in held.records] == [0, 1, 2]


# -- 5. pauses ----------------------------------------------------------------------------------


async def test_a_job_waiting_for_a_send_slot_does_not_send_once_its_route_is_paused(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    """After ``set_paused`` returns, no new ``/send`` of the paused route starts until it is
    resumed, also for a job that was already waiting for a (global) send slot."""
    h = harness(max_in_flight=1)
    gate = asyncio.Event()
    ingress.script("a", Answer(gate=gate))
    h.send(0, "a")
    await until(lambda: ingress.requests("a"), bool, "the first send under way", 3, 0.002)
    h.send(1, "b")  # waits for the only global slot
    await settle(h)
    h.set_paused({"Ledger"}, ())
    gate.set()
    await h.finished_offsets(0)
    await settle(h, 0.1)
    assert ingress.requests("b") == [], "record 1 was sent while its route was paused"
    h.set_paused((), ())
    await h.finished_offsets(1)


# -- 6. a rate limit removed by a reload --------------------------------------------------------


async def test_jobs_waiting_for_a_rate_limit_a_reload_removes_go_at_once(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    """Jobs waiting for their route's tokens go promptly once ``configure_routes`` removes the
    route's ``rate_limit``, not after the wait the old rate computed (2 s and 4 s here)."""
    h = harness(routes=(route_config("Ledger", rate_limit=0.5, rate_limit_burst=1),))
    h.send(0, "k0")
    await h.finished_offsets(0)
    h.send(1, "k1")
    h.send(2, "k2")
    await settle(h)
    h.dispatcher.configure_routes((route_config("Ledger"),))
    await h.finished_offsets(1, 2, timeout=0.5)


# -- 7. lanes across a reload -------------------------------------------------------------------


async def test_a_keys_order_holds_when_a_reload_changes_the_routes_ordering(
    ingress: FakeIngress, harness: HarnessFactory
) -> None:
    """Per key, the ingress accepts in offset order across a reload that changes a route's
    ``ordering`` from "partition" (lane ``(route, topic, partition)``) to "key" (lane
    ``(service, key)``): the next record of the key waits for the one still retrying."""
    h = harness(routes=(route_config("Ledger", ordering="partition"),))
    ingress.script("a", *[Answer(429, {"Retry-After": "0.03"})] * 3)
    single(h, 0, "a", ("Ledger", TOPIC, 0))
    await until(lambda: ingress.requests("a"), bool, "record 0 sent (and refused)", 3, 0.002)
    h.dispatcher.configure_routes((route_config("Ledger", ordering="key"),))
    single(h, 1, "a", ("Ledger", "a"))  # planned by the reloaded route
    await h.finished_offsets(0, 1)
    assert ingress.overtakes == []
    assert ingress.applied["a"] == [0, 1]
