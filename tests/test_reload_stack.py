"""Reloading the routing file of a running bridge, end to end on both brokers with real Restate.

What each test proves: an invalid file on SIGHUP changes nothing (the process runs on, the log
names ``PATH:LINE``, the old routes keep delivering); a route added for a new topic delivers it
(and ``POST /admin/reload`` wants the listener's token); reloads in the middle of a steady stream
(a target changed, a topic added) deliver every record exactly once — the old handler the records
before the swap, the new one those after, per partition in offset order — and nothing is sent
twice; a removed route's partition ends committed exactly where its delivered records end, and is
no longer fetched.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from bridge.ingress import Client
from tests.helpers import hold_for, recorded, recorded_as, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.ledger import (
    PARTITIONS,
    Ledger,
    committed_offsets,
    describe_diff,
    outcome,
    states,
    wait_committed,
)
from tests.stack.proxy import IngressProxy
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


def reloads(bridge: BridgeProcess, which: str) -> float:
    return bridge.value("restate_bridge_reloads_total", outcome=which)


def rewrite(bridge: BridgeProcess, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` in the bridge's routing file; the new text."""
    text = bridge.routes_path.read_text()
    assert old in text, old
    text = text.replace(old, new)
    bridge.routes_path.write_text(text)
    return text


async def post_reload(bridge: BridgeProcess, token: str | None = None) -> tuple[int, Any]:
    # off the test's loop: records keep being produced meanwhile
    return await asyncio.to_thread(bridge.post, "/admin/reload", token=token)


def values(entries: list[Any]) -> list[Any]:
    """What a Recorder holds, unwrapped: ``record`` keeps the value, ``recordHeaders`` wraps it."""
    return [e["value"] if isinstance(e, dict) and "headers" in e else e for e in entries]


# -- an invalid file ------------------------------------------------------------------------------


async def test_an_invalid_file_on_sighup_changes_nothing_and_the_old_routes_deliver(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    topic, key, group = unique("rl-bad"), unique("k"), unique("g")
    await create_topics(broker.bootstrap_servers, [topic])
    bridge = bridges.start(recorder(topic), group_id=group)
    await produce(broker.bootstrap_servers, topic, [Message(key.encode(), b'"before"')])
    await recorded_as(client, key, ["before"])

    text = rewrite(bridge, 'target = "object"', 'target = "objekt"')
    line = text.splitlines().index('target = "objekt"') + 1
    bridge.signal(signal.SIGHUP)
    await until(lambda: reloads(bridge, "invalid"), lambda n: n == 1, "the reload refused")

    bridge.assert_alive("the invalid reload")
    problem = f"{bridge.routes_path}:{line}: target must be one of service, object, workflow"
    assert f"ERROR bridge.operate.reload: {problem}" in bridge.log()
    assert "reload refused: " in bridge.log()
    last = bridge.status_json()["controls"]["last_reload"]
    assert (last["outcome"], last["source"]) == ("invalid", "SIGHUP")
    assert [p.startswith(problem) for p in last["problems"]] == [True]
    assert reloads(bridge, "applied") == 0
    # the old route still runs: the next record is delivered by it, once
    await produce(broker.bootstrap_servers, topic, [Message(key.encode(), b'"after"')])
    await recorded_as(client, key, ["before", "after"])
    await until(lambda: bridge.committed(topic), lambda c: c == {0: 2}, "committed")


# -- a route added, the token -----------------------------------------------------------------


async def test_a_route_added_by_reload_delivers_its_new_topic_and_the_token_is_required(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    first, second, group = unique("rl-one"), unique("rl-two"), unique("g")
    k1, k2 = unique("k1"), unique("k2")
    await create_topics(bootstrap, [first, second])
    token = "reload-" + unique("token")
    proc = bridges.process("bridge", env={"RELOAD_TEST_TOKEN": token})
    proc.token = token
    proc.write_routes(
        bridges.routes(
            recorder(first, name="first"),
            group_id=group,
            metrics_extra='token_env = "RELOAD_TEST_TOKEN"\n',
        ).replace("127.0.0.1:0", f"127.0.0.1:{proc.metrics_port}")
    )
    proc.start()
    # records of the new topic written before the reload: the new route reads them from the start
    await produce(bootstrap, second, [Message(k2.encode(), b'"early"')])
    await produce(bootstrap, first, [Message(k1.encode(), b'"one"')])
    await recorded_as(client, k1, ["one"])

    with proc.routes_path.open("a") as f:
        f.write(recorder(second, name="second"))
    rewrite(proc, 'retry_max = "1s"', 'retry_max = "2s"')  # [delivery]: needs a restart
    for wrong in ("", "not-the-token"):
        status, body = await post_reload(proc, token=wrong)
        assert (status, body["status"]) == (401, "unauthorized"), wrong
    assert reloads(proc, "applied") == 0, "a reload ran without the token"

    status, body = await post_reload(proc)
    assert status == 200, body
    assert body == {
        "status": "ok",
        "changes": {
            "added": ["second"],
            "removed": [],
            "changed": {},
            "topics_added": [second],
            "topics_removed": [],
            "resubscribed": True,
        },
        "restart_required": ["delivery"],
    }
    warning = "reload: [delivery] changed (retry_max): restart to apply"
    assert f"WARNING bridge.operate.reload: {warning}" in proc.log()
    # the new route's series exist at 0 before its first record is counted
    assert proc.samples("restate_bridge_retries_total", route="second") != []
    await recorded_as(client, k2, ["early"])
    await produce(bootstrap, second, [Message(k2.encode(), b'"late"')])
    await produce(bootstrap, first, [Message(k1.encode(), b'"two"')])
    await recorded_as(client, k2, ["early", "late"])
    await recorded_as(client, k1, ["one", "two"])
    for topic in (first, second):
        await until(
            lambda t=topic: committed_offsets(bootstrap, group, t),
            lambda c: c == {0: 2},
            f"{topic} committed",
        )
    status_json = proc.status_json()
    assert [r["name"] for r in status_json["routes"]] == ["first", "second"]
    last = status_json["controls"]["last_reload"]
    assert (last["outcome"], last["source"], last["restart_required"]) == (
        "applied",
        "admin",
        ["delivery"],
    )
    assert reloads(proc, "applied") == 1
    assert outcome(proc, first, "duplicate") + outcome(proc, second, "duplicate") == 0


# -- a steady stream ------------------------------------------------------------------------------


async def produce_stream(
    bootstrap: str, ledger: Ledger, keys: list[str], total: int, chunk: int, pause: float
) -> dict[int, tuple[int, int]]:
    """Produce ``{"n": i}`` for i < total, round-robin over ``keys``, ``chunk`` at a time with
    ``pause`` between chunks; where each n landed: ``{n: (partition, offset)}``."""
    where: dict[int, tuple[int, int]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for start in range(0, total, chunk):
            sent = []
            for n in range(start, min(start + chunk, total)):
                key = keys[n % len(keys)]
                value = {"n": n}
                future = await producer.send(
                    ledger.topic, json.dumps(value).encode(), key=key.encode()
                )
                sent.append((n, key, value, future))
            for n, key, value, future in sent:
                meta = await future
                ledger.add(key, meta.partition, meta.offset, value)
                where[n] = (meta.partition, meta.offset)
            await asyncio.sleep(pause)
    finally:
        await producer.stop()
    return where


def phases(runs: list[str]) -> list[str]:
    """``["a", "a", "b", "a"]`` -> ``["a", "b", "a"]``."""
    out: list[str] = []
    for item in runs:
        if not out or out[-1] != item:
            out.append(item)
    return out


async def test_reloads_in_a_steady_stream_deliver_every_record_exactly_once(
    broker: Broker,
    bridges: BridgeFactory,
    client: Client,
    restate: RestateServer,
    proxy: IngressProxy,
) -> None:
    """2,000 records over 50 keys, produced over several seconds. Mid-stream a SIGHUP changes
    the route's handler (``record`` -> ``recordHeaders``: no rebalance); later a
    ``POST /admin/reload`` changes it back and adds a route for another topic (the consumer
    drains, commits and subscribes anew). Every record arrives exactly once, in offset order per
    key; per partition, records go to the old handler up to one offset and to the new one from
    there; nothing is sent twice; the group commits the end of every partition."""
    bootstrap, total = broker.bootstrap_servers, 2000
    topic, extra, tag, group = unique("rl-flow"), unique("rl-extra"), unique("k"), unique("g")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    await create_topics(bootstrap, [extra])
    keys = [f"{tag}-{i}" for i in range(50)]
    ledger = Ledger(topic)
    # slow sends, two at a time: a backlog of fetched records builds up (up to 200), and each
    # reload finds records planned by the old route and not yet sent
    proxy.delay = 0.01
    bridge = bridges.start(
        recorder(topic, max_in_flight=2),
        group_id=group,
        ingress_url=proxy.url,
        delivery="max_pending_records = 200",
    )

    stream = asyncio.create_task(produce_stream(bootstrap, ledger, keys, total, 50, 0.15))
    await until(lambda: outcome(bridge, topic, "accepted"), lambda n: n >= 400, "400 accepted")
    rewrite(bridge, 'handler = "record"', 'handler = "recordHeaders"')
    bridge.signal(signal.SIGHUP)
    await until(lambda: reloads(bridge, "applied"), lambda n: n == 1, "the first reload")
    at_first = outcome(bridge, topic, "accepted")

    await until(lambda: outcome(bridge, topic, "accepted"), lambda n: n >= at_first + 400, "more")
    extra_key = unique("x")
    await produce(bootstrap, extra, [Message(extra_key.encode(), b'"extra"')])
    with bridge.routes_path.open("a") as f:
        f.write(recorder(extra, name="extra"))
    rewrite(bridge, 'handler = "recordHeaders"', 'handler = "record"')
    status, body = await post_reload(bridge)
    assert status == 200, body
    assert body["changes"]["changed"] == {"rec": ["handler"]}
    assert body["changes"]["resubscribed"] is True
    at_second = outcome(bridge, topic, "accepted")
    where = await stream
    assert at_second < total, "the stream ended before the second reload: nothing was tested"

    await wait_committed(bootstrap, group, ledger, "after two reloads")
    expected = ledger.expected()
    try:
        held = await until(
            lambda: states(client, keys),
            lambda s: all(values(s[k]) == expected[k] for k in keys),
            "every record once, in order per key",
        )
    except AssertionError:
        got = {k: values(v) for k, v in (await states(client, keys)).items()}
        raise AssertionError(describe_diff(got, expected)) from None
    await recorded_as(client, extra_key, ["extra"])

    # per partition, in offset order: record ... recordHeaders ... record, each switch once
    handler_at: dict[tuple[int, int], str] = {}
    for key in keys:
        for entry in held[key]:
            wrapped = isinstance(entry, dict) and "headers" in entry
            n = (entry["value"] if wrapped else entry)["n"]
            handler_at[where[n]] = "recordHeaders" if wrapped else "record"
    for partition in range(PARTITIONS):
        runs = [h for (p, _), h in sorted(handler_at.items()) if p == partition]
        assert phases(runs) in (
            ["record"],
            ["record", "recordHeaders"],
            ["record", "recordHeaders", "record"],
        ), (partition, phases(runs))
    used = Counter(handler_at.values())
    assert used["recordHeaders"] > 0, "no record went to the handler of the first reload"
    assert set(used) == {"record", "recordHeaders"}

    # Restate holds one invocation per record: nothing was sent twice to either handler
    quoted = ", ".join(f"'{k}'" for k in keys)
    rows = restate.query(
        "SELECT target_handler_name AS handler, idempotency_key AS idem FROM sys_invocation "
        f"WHERE target_service_name = 'Recorder' AND target_service_key IN ({quoted})"
    )
    rows = [r for r in rows if r["handler"] in ("record", "recordHeaders")]
    assert len(rows) == total, f"{len(rows)} invocations for {total} records"
    assert len({r["idem"] for r in rows}) == total
    assert Counter(r["handler"] for r in rows) == used
    assert outcome(bridge, topic, "duplicate") == 0, "a record was sent again after a reload"
    sent = Counter(s.idempotency_key for s in proxy.snapshot() if s.path.startswith("/Recorder/"))
    assert sum(sent.values()) == total + 1, "sends through the proxy: one per record"
    assert max(sent.values()) == 1, [k for k, n in sent.items() if n > 1][:5]
    assert reloads(bridge, "applied") == 2
    [drained] = re.findall(r"reload: the topics change; draining (\d+) unfinished", bridge.log())
    assert int(drained) > 0, "the second reload found nothing under way: the drain was not tested"


# -- a route removed ------------------------------------------------------------------------------


async def test_a_removed_route_ends_committed_where_its_deliveries_end_and_is_not_fetched(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    kept, gone, group = unique("rl-kept"), unique("rl-gone"), unique("g")
    kept_key, tag = unique("k"), unique("g")
    await create_topics(bootstrap, [kept, gone])
    gone_keys = [f"{tag}-{i}" for i in range(5)]
    # a small per-partition window: the removal lands with most of the topic still in Kafka
    bridge = bridges.start(
        recorder(kept, name="kept") + recorder(gone, name="gone"),
        group_id=group,
        delivery="max_pending_per_partition = 20",
    )
    await produce(bootstrap, kept, [Message(kept_key.encode(), b'"k0"')])
    await produce(
        bootstrap,
        gone,
        [Message(gone_keys[i % 5].encode(), json.dumps(i).encode()) for i in range(300)],
    )
    await until(lambda: outcome(bridge, gone, "accepted"), lambda n: n >= 50, "50 accepted")
    text = bridge.routes_path.read_text()
    start = text.index(recorder(gone, name="gone"))
    bridge.routes_path.write_text(text[:start] + text[start + len(recorder(gone, name="gone")) :])
    status, body = await post_reload(bridge)  # no listener token configured: none is needed
    assert status == 200, body
    assert (body["changes"]["removed"], body["changes"]["topics_removed"]) == (["gone"], [gone])

    # the answer comes after the drain and the commit: the partition's final commit is there
    committed = await committed_offsets(bootstrap, group, gone)
    assert 0 < committed.get(0, 0) < 300, committed
    count = committed[0]
    # ... exactly where its delivered records end: every record before it, none after
    delivered = await until(
        lambda: states(client, gone_keys),
        lambda s: sum(len(v) for v in s.values()) >= count,
        f"{count} records in Restate",
    )
    for i, key in enumerate(gone_keys):
        assert delivered[key] == list(range(i, count, 5)), f"{key}: not the offsets before {count}"
    # ... and it is no longer fetched: later records stay in Kafka; the kept route goes on
    await produce(bootstrap, gone, [Message(gone_keys[0].encode(), b"999")])
    await produce(bootstrap, kept, [Message(kept_key.encode(), b'"k1"')])
    await recorded_as(client, kept_key, ["k0", "k1"])

    async def unchanged() -> None:
        # a read Restate leaves unanswered (late in a loaded run) says nothing either way
        answered = {
            k: v for k, v in (await states(client, gone_keys)).items() if isinstance(v, list)
        }
        assert answered == {k: delivered[k] for k in answered}, "the removed topic was delivered"

    await until(unchanged, hold_for(3), "nothing more delivered from the removed topic")
    assert await committed_offsets(bootstrap, group, gone) == {0: count}
    assert bridge.per_partition("restate_bridge_consumer_lag", gone) == {}
    assert outcome(bridge, gone, "unrouted") + outcome(bridge, gone, "duplicate") == 0
    assert await recorded(client, kept_key)() == ["k0", "k1"]


# -- from topics to a pattern ---------------------------------------------------------------------


async def test_a_route_moved_from_a_topic_to_a_pattern_resubscribes_without_resending(
    broker: Broker, bridges: BridgeFactory, client: Client
) -> None:
    """aiokafka refuses to go from a topic list to a pattern on one subscription: the bridge
    unsubscribes first (leaving the group) and joins again; what it sent before is not sent
    again, and topics the pattern matches are read from their start."""
    bootstrap = broker.bootstrap_servers
    stem = unique("rl-pat")
    old, new, key, group = f"{stem}-a", f"{stem}-b", unique("k"), unique("g")
    await create_topics(bootstrap, [old, new])
    bridge = bridges.start(recorder(old), group_id=group)
    await produce(bootstrap, old, [Message(key.encode(), b'"a1"')])
    await produce(bootstrap, new, [Message(key.encode(), b'"b1"')])
    await recorded_as(client, key, ["a1"])

    rewrite(bridge, f'topic = "{old}"', f'topic_pattern = "{stem}-[ab]"')
    status, body = await post_reload(bridge)
    assert status == 200, body
    assert body["changes"]["changed"] == {"rec": ["topics", "topic_pattern"]}
    assert body["changes"]["topics_removed"] == [old]
    await until(recorded(client, key), lambda got: sorted(got) == ["a1", "b1"], "b1 delivered")
    await produce(bootstrap, old, [Message(key.encode(), b'"a2"')])
    await until(recorded(client, key), lambda got: len(got) == 3, "a2 delivered")
    assert sorted(await recorded(client, key)()) == ["a1", "a2", "b1"]
    for topic in (old, new):
        assert outcome(bridge, topic, "duplicate") == 0
    want = {old: {0: 2}, new: {0: 1}}
    for topic, offsets in want.items():
        await until(
            lambda t=topic: committed_offsets(bootstrap, group, t),
            lambda c, o=offsets: c == o,
            f"{topic} committed",
        )
