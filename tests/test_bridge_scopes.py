"""Scoped invocations against a real Restate 1.7.12 started with the options they need
(``experimental-enable-vqueues``, ``experimental-enable-scoped-virtual-objects``): the ingress
client's ``scope=`` / ``limit_key=``, a bridge route's ``scope`` / ``limit_key``, and what the
bridge does with a server that has scopes switched off (the session's plain Restate)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridge.ingress import Client, ResponseError
from tests.helpers import hold_for, messages_total, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


def state(client: Client, key: str, scope: str | None = None) -> Callable[[], Awaitable[Any]]:
    """A probe of the ``Recorder`` object ``key`` of ``scope``."""
    return lambda: client.object("Recorder", key, "get", scope=scope).request()


# -- the ingress client ---------------------------------------------------------------------------


async def test_a_scoped_object_has_state_of_its_own_and_sys_invocation_shows_scope_and_limit_key(
    scoped_client: Client, scoped_restate: RestateServer
) -> None:
    key = unique("acct")
    a = await scoped_client.object("Recorder", key, "record", scope="tenant-a").send(
        "a1", idempotency_key="i-1", limit_key="tenant-a/u1"
    )
    b = await scoped_client.object("Recorder", key, "record", scope="tenant-b").send("b1")
    plain = await scoped_client.object("Recorder", key, "record").send("u1")
    await until(state(scoped_client, key, "tenant-a"), lambda v: v == ["a1"], "tenant-a's state")
    assert await state(scoped_client, key, "tenant-b")() == ["b1"]
    assert await state(scoped_client, key)() == ["u1"]
    rows = scoped_restate.query(
        f"select id, scope, limit_key from sys_invocation where target = 'Recorder/{key}/record'"
    )
    by_id = {row["id"]: (row.get("scope"), row.get("limit_key")) for row in rows}
    assert by_id == {
        a.invocation_id: ("tenant-a", "tenant-a/u1"),
        b.invocation_id: ("tenant-b", None),
        plain.invocation_id: (None, None),
    }
    # an idempotency key is per scope: the same key in another scope is another invocation
    again = await scoped_client.object("Recorder", key, "record", scope="tenant-a").send(
        "a1", idempotency_key="i-1", limit_key="tenant-a/u1"
    )
    assert again.duplicate
    assert again.invocation_id == a.invocation_id
    # attaching by invocation id works for a scoped invocation (reply routes rely on it)
    assert await scoped_client.invocation(a.invocation_id).attach() == 1


async def test_scoped_service_and_workflow_calls(scoped_client: Client) -> None:
    greeter = scoped_client.service("Greeter", "greet", scope="s1")
    assert await greeter.request("Ada", limit_key="s1") == "Hello, Ada!"
    wf_id = unique("wf")
    receipt = await scoped_client.workflow("Signup", wf_id, scope="s1").send("a@b")
    await scoped_client.workflow("Signup", wf_id, "approve", scope="s1").request("bob")
    assert await scoped_client.invocation(receipt.invocation_id).attach() == "a@b approved by bob"


@pytest.mark.parametrize(
    ("scope", "limit_key", "message"),
    [
        ("has space", None, "bad scope value"),
        ("s" * 37, None, "bad scope value: value too long: 37 bytes (max 36)"),
        ("ok", "a/b/c", "too many path components"),
        ("ok", "a b", "invalid limit-key"),
    ],
)
async def test_what_restate_refuses_is_what_the_bridge_checks(
    scoped_client: Client, scope: str, limit_key: str | None, message: str
) -> None:
    """Restate 1.7.12's own answers for the values :mod:`bridge.scopes` refuses up front."""
    with pytest.raises(ResponseError) as info:
        await scoped_client.service("Greeter", "greet", scope=scope).send("x", limit_key=limit_key)
    assert (info.value.status, info.value.source) == (400, "ingress")
    assert message in info.value.message


async def test_a_plain_server_refuses_scopes(client: Client) -> None:
    """The session's Restate runs without the experimental options."""
    with pytest.raises(ResponseError) as info:
        await client.service("Greeter", "greet", scope="s1").send("x")
    assert (info.value.status, info.value.message) == (
        400,
        "scoped invocations require vqueues to be enabled",
    )


# -- the bridge -----------------------------------------------------------------------------------


async def test_a_scoped_route_sends_each_record_to_its_tenants_scope(
    broker: Broker,
    scoped_bridges: BridgeFactory,
    scoped_client: Client,
    scoped_restate: RestateServer,
) -> None:
    topic, dlq, key = unique("tenants"), unique("dlq"), unique("acct")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    bridge = scoped_bridges.start(
        recorder(
            topic,
            name="tenants",
            scope="{header.tenant}",
            limit_key="{header.tenant}/{value.user}",
        ),
        group_id=unique("g"),
        dead_letter_topic=dlq,
    )
    k = key.encode()
    await produce(
        broker.bootstrap_servers,
        topic,
        [
            Message(k, json.dumps({"user": "u1", "n": 0}).encode(), [("tenant", b"acme")]),
            Message(k, json.dumps({"user": "u2", "n": 1}).encode(), [("tenant", b"globex")]),
            Message(k, json.dumps({"user": "u1", "n": 2}).encode(), [("tenant", b"acme")]),
            Message(k, json.dumps({"user": "u1", "n": 3}).encode(), [("tenant", b"acme corp")]),
            Message(k, json.dumps({"user": "u1", "n": 4}).encode()),
        ],
    )
    await until(
        state(scoped_client, key, "acme"),
        lambda v: v == [{"user": "u1", "n": 0}, {"user": "u1", "n": 2}],
        "acme's records, in order",
    )
    assert await state(scoped_client, key, "globex")() == [{"user": "u2", "n": 1}]
    assert await state(scoped_client, key)() == []  # the unscoped object got nothing
    rows = scoped_restate.query(
        "select scope, limit_key, idempotency_key from sys_invocation "
        f"where target = 'Recorder/{key}/record'"
    )
    assert sorted((r["scope"], r["limit_key"], r["idempotency_key"]) for r in rows) == [
        ("acme", "acme/u1", f"{topic}-0-0:tenants"),
        ("acme", "acme/u1", f"{topic}-0-2:tenants"),
        ("globex", "globex/u2", f"{topic}-0-1:tenants"),
    ]
    dead = await read_topic(broker.bootstrap_servers, dlq, expect=2)
    reasons = {
        dict(d.headers)["bridge.offset"]: dict(d.headers)["bridge.error"].decode() for d in dead
    }
    assert reasons == {
        b"3": "the scope template '{header.tenant}' rendered an unusable value: scope "
        "'acme corp' holds characters Restate refuses; it allows 1 to 36 of the characters "
        "a-z A-Z 0-9 _ . -",
        b"4": "header 'tenant' is missing",
    }
    await until(lambda: bridge.committed(topic), lambda c: c == {0: 5.0}, "all committed")
    samples = bridge.metrics()
    assert messages_total(samples, topic, "tenants", "accepted") == 3
    assert messages_total(samples, topic, "tenants", "dead_lettered") == 2


async def test_a_scoped_route_on_a_server_without_scopes_waits_and_says_why(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    """Every record would be refused alike (400): the server, not the record, is at fault, so
    nothing is dead-lettered; the bridge retries, fetching pauses and /readyz says why."""
    topic, dlq, key = unique("unscoped"), unique("dlq"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    bridge = bridges.start(
        recorder(topic, name="scoped", scope="acme"),
        group_id=unique("g"),
        dead_letter_topic=dlq,
    )
    await produce(broker.bootstrap_servers, topic, [Message(key.encode(), b"1")])
    await until(
        lambda: bridge.value(
            "restate_bridge_ingress_errors_total", route="scoped", reason="http_400"
        ),
        lambda n: n >= 2,
        "the 400 retried",
    )
    await until(
        bridge.readyz,
        lambda r: r[0] == 503 and "scoped invocations require vqueues" in json.dumps(r[1]),
        "/readyz saying why",
    )
    await until(lambda: bridge.committed(topic), hold_for(2.0), "nothing committed for 2 s")
    assert bridge.committed(topic).get(0, 0.0) == 0.0
    assert await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=2) == []
    assert messages_total(bridge.metrics(), topic, "scoped", "dead_lettered") == 0
    assert await client.object("Recorder", key, "get").request() == []
