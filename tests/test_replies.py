"""Reply routes end to end: a handler's result goes back to Kafka, one reply per source record.

Every test runs on both brokers with the real stack. The replies are read back from their topic
and compared header by header with the contract (``bridge.status``, ``bridge.invocation_id``,
``bridge.topic``, ``bridge.partition``, ``bridge.offset``, the correlation header,
``bridge.error_code`` / ``bridge.error``); Restate's ``sys_invocation`` shows that a crash
between accepting and replying cost a second reply at most, never a second invocation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bridge.ingress import Client, IngressTimeout
from tests.helpers import route, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.ledger import committed_offsets
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


def headers_of(msg: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in msg.headers}


async def replies(bootstrap: str, topic: str, expect: int, timeout: float = 60) -> list[Any]:
    """At least ``expect`` reply records of ``topic`` (fails naming what arrived otherwise)."""
    got: list[Any] = []

    async def probe() -> list[Any]:
        got[:] = await read_topic(bootstrap, topic, expect, timeout=3)
        return got

    return await until(probe, lambda g: len(g) >= expect, f"{expect} replies on {topic}", timeout)


def by_offset(msgs: list[Any]) -> dict[int, Any]:
    return {int(headers_of(m)["bridge.offset"]): m for m in msgs}


def reply_total(bridge: BridgeProcess, route_name: str, status: str) -> float:
    return bridge.value("restate_bridge_replies_total", route=route_name, status=status)


async def approve(client: Client, workflow_id: str, approver: str = "boss") -> None:
    """Approve under an idempotency key: when a loaded Restate leaves the call unanswered, the
    same call is made again and joins the first one, so the approval still happens once."""
    target = client.workflow("Signup", workflow_id, "approve")
    for attempt in range(3):
        try:
            await target.request(approver, idempotency_key=f"approve-{workflow_id}-{approver}")
            return
        except IngressTimeout:
            if attempt == 2:
                raise


async def workflow_waiting(client: Client, workflow_id: str) -> None:
    await until(
        lambda: client.workflow("Signup", workflow_id, "status").request(),
        lambda s: s == "waiting",
        f"workflow {workflow_id} waiting for approval",
    )


def run_invocations(restate: RestateServer, workflow_id: str) -> list[dict[str, Any]]:
    return restate.query(
        "SELECT id, status FROM sys_invocation WHERE target_service_name = 'Signup' "
        f"AND target_handler_name = 'run' AND target_service_key = '{workflow_id}'"
    )


async def test_replies_for_every_target_kind_and_a_terminal_error(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, out, tag = unique("ask"), unique("answers"), unique("k")
    await create_topics(bootstrap, [topic, out])
    wid = unique("wf")
    routes = (
        route(
            name="greet",
            topic=topic,
            target="service",
            service="Greeter",
            handler="greet",
            body="{value.name}",
            match={"header.kind": "greet"},
            reply_topic=out,
            reply_correlation_header="correlation-id",
        )
        + route(
            name="count",
            topic=topic,
            target="object",
            service="Recorder",
            handler="record",
            key=f"{tag}-{{key}}",
            match={"header.kind": "count"},
            reply_topic=out,
        )
        + route(
            name="signup",
            topic=topic,
            target="workflow",
            service="Signup",
            handler="run",
            key="{value.id}",
            body="{value.email}",
            match={"header.kind": "signup"},
            reply_topic=out,
        )
        + route(
            name="fail",
            topic=topic,
            target="service",
            service="Greeter",
            handler="fail",
            body="{value.why}",
            match={"header.kind": "fail"},
            reply_topic=out,
            reply_correlation_header="correlation-id",
        )
    )
    await produce(
        bootstrap,
        topic,
        [
            Message(b"g", b'{"name": "Ada"}', [("kind", b"greet"), ("correlation-id", b"c-1")]),
            Message(b"obj", b'{"n": 1}', [("kind", b"count")]),
            Message(b"obj", b'{"n": 2}', [("kind", b"count")]),
            Message(b"w", json.dumps({"id": wid, "email": "a@x"}).encode(), [("kind", b"signup")]),
            Message(
                b"f", b'{"why": "no such user"}', [("kind", b"fail"), ("correlation-id", b"c-5")]
            ),
            Message(b"g2", b'{"name": "Bob"}', [("kind", b"greet")]),  # no correlation header
        ],
    )
    bridge = bridges.start(routes, group_id=unique("g"))
    await workflow_waiting(client, wid)
    await approve(client, wid)
    got = by_offset(await replies(bootstrap, out, 6))
    assert sorted(got) == [0, 1, 2, 3, 4, 5]

    for offset, msg in got.items():
        h = headers_of(msg)
        assert (h["bridge.topic"], h["bridge.partition"]) == (topic, "0"), h
        assert h["bridge.invocation_id"].startswith("inv_"), h
        assert msg.key == [b"g", b"obj", b"obj", b"w", b"f", b"g2"][offset]

    greet = got[0]
    assert greet.value == b'"Hello, Ada!"'
    assert headers_of(greet) == {
        "bridge.status": "ok",
        "bridge.invocation_id": headers_of(greet)["bridge.invocation_id"],
        "bridge.topic": topic,
        "bridge.partition": "0",
        "bridge.offset": "0",
        "correlation-id": "c-1",
    }
    assert [got[1].value, got[2].value] == [b"1", b"2"]  # the object's count after each record
    assert got[3].value == b'"a@x approved by boss"'
    assert "correlation-id" not in headers_of(got[5])
    assert got[5].value == b'"Hello, Bob!"'

    failed = got[4]
    h = headers_of(failed)
    assert failed.value == b""
    assert h["bridge.status"] == "error"
    assert h["bridge.error_code"] == "400"
    assert h["bridge.error"] == "no such user"
    assert h["correlation-id"] == "c-5"
    for msg in (got[0], got[1], got[3]):
        assert "bridge.error" not in headers_of(msg)

    await until(
        lambda: (reply_total(bridge, "greet", "ok"), reply_total(bridge, "fail", "error")),
        lambda v: v == (2, 1),
        "the replies counted",
    )
    assert reply_total(bridge, "count", "ok") == 2
    assert reply_total(bridge, "signup", "ok") == 1
    assert bridge.value("restate_bridge_waiting_replies") == 0
    assert bridge.value("restate_bridge_reply_wait_seconds_count", route="signup") == 1
    group_offsets = await until(
        lambda: committed_offsets(bootstrap, bridge_group(bridge), topic),
        lambda c: c.get(0) == 6,
        "every record committed",
    )
    assert group_offsets == {0: 6}


def bridge_group(bridge: BridgeProcess) -> str:
    for line in bridge.routes_path.read_text().splitlines():
        if line.startswith("group_id"):
            return str(json.loads(line.partition("=")[2].strip()))
    raise AssertionError("no group_id in the routes file")


async def test_a_waiting_workflow_holds_neither_its_lane_nor_other_records_but_holds_the_commit(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    """Ordering by partition puts every record in one lane: the records behind the waiting
    workflow are still sent and answered; the partition's commit waits for the first reply."""
    bootstrap = broker.bootstrap_servers
    topic, out, group = unique("slow"), unique("slow-replies"), unique("g")
    await create_topics(bootstrap, [topic, out])
    slow, fast = unique("wf-slow"), [unique("wf-fast") for _ in range(3)]
    await produce(
        bootstrap,
        topic,
        [
            Message(w.encode(), json.dumps({"id": w, "email": f"{w}@x"}).encode())
            for w in (slow, *fast)
        ],
    )
    bridge = bridges.start(
        route(
            name="signup",
            topic=topic,
            target="workflow",
            service="Signup",
            handler="run",
            key="{value.id}",
            body="{value.email}",
            ordering="partition",
            reply_topic=out,
        ),
        group_id=group,
    )
    await workflow_waiting(client, slow)
    for w in fast:
        await workflow_waiting(client, w)  # sent although the lane's first record still waits
        await approve(client, w)
    got = by_offset(await replies(bootstrap, out, 3))
    assert sorted(got) == [1, 2, 3]
    assert {m.value for m in got.values()} == {f'"{w}@x approved by boss"'.encode() for w in fast}
    # the slow one still waits, and nothing past it is committed
    await until(
        lambda: bridge.value("restate_bridge_waiting_replies"), lambda v: v == 1, "1 waiting"
    )
    await asyncio.sleep(1.5)  # several commit intervals
    assert await committed_offsets(bootstrap, group, topic) in ({}, {0: 0})

    await approve(client, slow)
    got = by_offset(await replies(bootstrap, out, 4))
    assert got[0].value == f'"{slow}@x approved by boss"'.encode()
    await until(
        lambda: committed_offsets(bootstrap, group, topic),
        lambda c: c.get(0) == 4,
        "all four committed after the last reply",
    )


async def test_kill_9_while_waiting_then_restart_replies_the_same_result_once_invoked(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, out, group = unique("crashwf"), unique("crashwf-replies"), unique("g")
    await create_topics(bootstrap, [topic, out])
    wid = unique("wf")
    await produce(
        bootstrap, topic, [Message(b"k", json.dumps({"id": wid, "email": "e@x"}).encode())]
    )
    routes = route(
        name="signup",
        topic=topic,
        target="workflow",
        service="Signup",
        handler="run",
        key="{value.id}",
        body="{value.email}",
        reply_topic=out,
    )

    first = bridges.start(routes, group_id=group, name="first")
    await workflow_waiting(client, wid)
    await until(lambda: first.value("restate_bridge_waiting_replies"), lambda v: v == 1, "waiting")
    first.kill()
    assert await committed_offsets(bootstrap, group, topic) == {}
    [before] = run_invocations(restate, wid)

    second = bridges.start(routes, group_id=group, name="second")
    await until(
        lambda: second.value("restate_bridge_waiting_replies"), lambda v: v == 1, "re-attached"
    )
    await approve(client, wid)
    [reply] = await replies(bootstrap, out, 1)
    assert reply.value == b'"e@x approved by boss"'
    assert headers_of(reply)["bridge.invocation_id"] == before["id"]
    assert headers_of(reply)["bridge.status"] == "ok"
    # the re-sent record was answered PreviouslyAccepted: one invocation, one reply
    assert second.value("restate_bridge_messages_total", topic=topic, outcome="duplicate") == 1
    rows = run_invocations(restate, wid)
    assert [r["id"] for r in rows] == [before["id"]], rows
    await until(
        lambda: committed_offsets(bootstrap, group, topic),
        lambda c: c.get(0) == 1,
        "committed after the reply",
    )
    assert len(await read_topic(bootstrap, out, 2, timeout=3)) == 1


async def test_a_missing_reply_topic_is_visible_and_loses_nothing(
    broker: Broker, bridges: BridgeFactory
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, out, group = unique("ask"), unique("not-yet"), unique("g")
    await create_topics(bootstrap, [topic])
    await produce(bootstrap, topic, [Message(b"k", b'"Ada"', [("correlation-id", b"x1")])])
    bridge = bridges.start(
        route(
            name="greet",
            topic=topic,
            target="service",
            service="Greeter",
            handler="greet",
            reply_topic=out,
            reply_correlation_header="correlation-id",
        ),
        group_id=group,
        wait_ready=False,
    )
    missing = {"route": "greet", "reason": "topic_missing"}
    await until(
        lambda: bridge.value("restate_bridge_reply_errors_total", **missing),
        lambda v: v >= 2,
        "the missing topic counted",
    )
    status, body = bridge.readyz()
    assert status == 503, body
    assert out in json.dumps(body), body
    assert f"reply to topic {out} not produced" in bridge.log()
    assert "does not exist" in bridge.log()
    await until(lambda: bridge.value("restate_bridge_waiting_replies"), lambda v: v == 1, "waiting")
    await asyncio.sleep(1)  # several commit intervals: nothing is committed past the record
    assert await committed_offsets(bootstrap, group, topic) == {}

    await create_topics(bootstrap, [out])
    [reply] = await replies(bootstrap, out, 1)
    assert reply.value == b'"Hello, Ada!"'
    assert headers_of(reply)["correlation-id"] == "x1"
    await until(
        lambda: committed_offsets(bootstrap, group, topic),
        lambda c: c.get(0) == 1,
        "committed once the reply was produced",
    )
    await until(lambda: bridge.readyz()[0], lambda s: s == 200, "ready again")
    assert bridge.value("restate_bridge_waiting_replies") == 0


async def test_no_result_within_the_maximum_wait_is_dead_lettered_and_keeps_running(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, out, dlq, group = unique("late"), unique("late-r"), unique("late-dlq"), unique("g")
    await create_topics(bootstrap, [topic, out, dlq])
    wid = unique("wf")
    await produce(
        bootstrap, topic, [Message(b"k", json.dumps({"id": wid, "email": "e@x"}).encode())]
    )
    bridge = bridges.start(
        route(
            name="signup",
            topic=topic,
            target="workflow",
            service="Signup",
            handler="run",
            key="{value.id}",
            body="{value.email}",
            reply_topic=out,
            reply_timeout="2s",
        ),
        group_id=group,
        dead_letter_topic=dlq,
    )
    [letter] = await replies(bootstrap, dlq, 1)
    reason = headers_of(letter)["bridge.error"]
    assert reason.startswith("no result within 2s; the invocation inv_"), reason
    assert reason.endswith(" keeps running in Restate"), reason
    assert await client.workflow("Signup", wid, "status").request() == "waiting"
    assert bridge.value("restate_bridge_reply_errors_total", reason="reply_timeout") == 1
    await until(
        lambda: committed_offsets(bootstrap, group, topic),
        lambda c: c.get(0) == 1,
        "the dead-lettered record committed",
    )
    await asyncio.sleep(1)
    assert await read_topic(bootstrap, out, 1, timeout=2) == []
