"""Delivery guarantees under failure: crashes, outages, rebalances, shutdown, poison records.

Every test runs the real stack (broker, Restate, handlers) with the bridge as a subprocess and
asserts on the ``Recorder`` objects' state: each key's list is exactly the values produced for that
key, in offset order — nothing missing, nothing twice. Restate's ``sys_invocation`` table and the
bridge's metrics pin down the rest (one invocation per record, where the committed offsets stand).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from bridge.ingress import Client
from tests.helpers import hold_for, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics
from tests.stack.ledger import (
    PARTITIONS,
    Ledger,
    assert_one_invocation_per_record,
    assert_states,
    committed_offsets,
    gauge,
    outcome,
    produce,
    produce_keyed,
    record_invocations,
    states,
    wait_committed,
)
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


# -- the tests -----------------------------------------------------------------------------------


async def test_kill_9_mid_stream_then_restart_has_exactly_once_effects(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    # enough records that the stream is still running when SIGTERM comes (early: at 20 accepted)
    bootstrap, total = broker.bootstrap_servers, 4000
    topic, tag, group = unique("crash"), unique("k"), unique("g")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    keys = [f"{tag}-{i}" for i in range(50)]
    ledger = Ledger(topic)
    await produce_keyed(bootstrap, ledger, keys, 0, total)
    routes = recorder(topic)

    first = bridges.start(routes, group_id=group, name="first")
    accepted_seen = await until(
        lambda: outcome(first, topic, "accepted"),
        lambda n: n >= 700,
        "700 accepted",
        interval=0.02,
    )
    first.kill()
    assert accepted_seen < total, "the first bridge finished before the kill: nothing was tested"
    committed = await committed_offsets(bootstrap, group, topic)
    committed_total = sum(committed.values())
    assert committed_total < total, f"everything was committed before the kill: {committed}"

    second = bridges.start(routes, group_id=group, name="second")
    await wait_committed(bootstrap, group, ledger, "restarted bridge")
    await assert_states(client, ledger.expected())
    await assert_one_invocation_per_record(restate, ledger)

    accepted, duplicate = outcome(second, topic, "accepted"), outcome(second, topic, "duplicate")
    # the second bridge re-reads exactly what the first did not commit, record by record ...
    assert accepted + duplicate == total - committed_total, (accepted, duplicate, committed)
    # ... and what the first had already sent beyond its commit comes back PreviouslyAccepted
    assert duplicate >= accepted_seen - committed_total, (duplicate, accepted_seen, committed)


async def test_restate_outage_pauses_and_resumes_without_loss(
    broker: Broker,
    bridges: BridgeFactory,
    own_restate: RestateServer,
    own_client: Client,
) -> None:
    bootstrap, server = broker.bootstrap_servers, own_restate
    topic, tag, group = unique("outage"), unique("k"), unique("g")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    keys = [f"{tag}-{i}" for i in range(20)]
    ledger = Ledger(topic)
    bridge = bridges.start(
        recorder(topic), group_id=group, ingress_url=server.ingress_url, name="outage"
    )
    await produce_keyed(bootstrap, ledger, keys, 0, 200)
    await wait_committed(bootstrap, group, ledger, "part 1")
    await assert_states(own_client, ledger.expected())
    part1_ends = dict(ledger.ends)
    assert bridge.readyz()[0] == 200

    # Restate goes away; part 2 is produced while it is down and can never be accepted
    await asyncio.to_thread(server.stop)
    await produce_keyed(bootstrap, ledger, keys, 200, 300)
    _, body = await until(
        bridge.readyz, lambda r: r[0] == 503, "not ready (/readyz 503) while Restate is down"
    )
    assert "Restate ingress unreachable" in body["detail"], body
    assert gauge(bridge, "restate_bridge_ingress_up") == 0

    # nothing is committed past what Restate accepted, however long the outage lasts
    def still_down() -> None:
        assert bridge.committed(topic) == part1_ends
        assert bridge.readyz()[0] == 503

    await until(still_down, hold_for(3), "watched for 3 s", interval=0.3)
    assert outcome(bridge, topic, "accepted") == 200

    await asyncio.to_thread(server.restart)
    await until(bridge.readyz, lambda r: r[0] == 200, "ready again after Restate restarted")
    await wait_committed(bootstrap, group, ledger, "part 2 after the restart")
    assert gauge(bridge, "restate_bridge_ingress_up") == 1
    await assert_states(own_client, ledger.expected())
    await assert_one_invocation_per_record(server, ledger)
    assert outcome(bridge, topic, "accepted") + outcome(bridge, topic, "duplicate") == 500


async def test_survivor_takes_over_a_killed_group_member(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, tag, group = unique("pair"), unique("k"), unique("g")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    keys = [f"{tag}-{i}" for i in range(40)]
    ledger = Ledger(topic)
    routes = recorder(topic)
    survivor = bridges.start(routes, group_id=group, name="survivor")
    victim = bridges.start(routes, group_id=group, name="victim")

    def lag_partitions(bridge: BridgeProcess) -> set[int]:
        return set(bridge.per_partition("restate_bridge_consumer_lag", topic))

    sent = 0
    # batch 1: both members own partitions and deliver
    await produce_keyed(bootstrap, ledger, keys, sent, 400)
    sent += 400
    await until(
        lambda: (outcome(survivor, topic, "accepted"), outcome(victim, topic, "accepted")),
        lambda ab: ab[0] > 0 and ab[1] > 0 and ab[0] + ab[1] >= 400,
        "batch 1 split between both members",
    )
    owned = await until(
        lambda: (lag_partitions(survivor), lag_partitions(victim)),
        lambda sv: bool(sv[0]) and bool(sv[1]) and not sv[0] & sv[1],
        "each member owning partitions",
    )
    # batch 2: kill the victim while it is delivering its share
    before = outcome(victim, topic, "accepted")
    await produce_keyed(bootstrap, ledger, keys, sent, 1000)
    sent += 1000
    await until(
        lambda: outcome(victim, topic, "accepted"),
        lambda n: n > before + 20,
        "the victim delivering batch 2",
        interval=0.02,
    )
    victim.kill()

    def delivered_by_survivor() -> int:
        return outcome(survivor, topic, "accepted") + outcome(survivor, topic, "duplicate")

    # more batches while the group notices and rebalances, each once the survivor moved on
    for _ in range(3):
        before = delivered_by_survivor()
        await produce_keyed(bootstrap, ledger, keys, sent, 200)
        sent += 200
        await until(
            delivered_by_survivor,
            lambda n, before=before: n > before,  # type: ignore[misc]
            "the survivor delivering during the takeover",
        )

    await wait_committed(bootstrap, group, ledger, "after the takeover")
    await until(
        lambda: lag_partitions(survivor),
        lambda parts: parts == set(range(PARTITIONS)),
        f"the survivor owning every partition (before the kill: {owned})",
    )
    await assert_states(client, ledger.expected())
    await assert_one_invocation_per_record(restate, ledger)


async def test_sigterm_drains_in_flight_sends_and_exits_0(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    # enough records that the stream is still running when SIGTERM comes (early: at 20 accepted)
    bootstrap, total = broker.bootstrap_servers, 4000
    topic, tag, group = unique("drain"), unique("k"), unique("g")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    keys = [f"{tag}-{i}" for i in range(50)]
    ledger = Ledger(topic)
    await produce_keyed(bootstrap, ledger, keys, 0, total)
    routes = recorder(topic)

    first = bridges.start(
        routes, group_id=group, name="first", delivery="max_pending_records = 300"
    )
    await until(
        lambda: outcome(first, topic, "accepted"), lambda n: n >= 20, "20 accepted", interval=0.02
    )
    code = await asyncio.to_thread(first.terminate)
    assert code == 0, first.process.log_tail()
    log = first.log()
    draining = re.search(r"stopping: draining (\d+) unfinished records", log)
    assert draining is not None, log[-3000:]
    assert int(draining.group(1)) > 0, "SIGTERM came when nothing was in flight"
    assert "drain timed out" not in log
    assert "INFO bridge: stopped" in log, log[-2000:]

    # a clean drain committed exactly what Restate accepted: not one record more or less
    committed = await committed_offsets(bootstrap, group, topic)
    committed_total = sum(committed.values())
    assert 0 < committed_total < total, committed
    await until(
        lambda: len(record_invocations(restate, keys)),
        lambda n: n == committed_total,
        f"{committed_total} invocations (as many as committed)",
        timeout=15,
    )

    second = bridges.start(routes, group_id=group, name="second")
    await wait_committed(bootstrap, group, ledger, "second bridge")
    await assert_states(client, ledger.expected())
    await assert_one_invocation_per_record(restate, ledger)
    assert outcome(second, topic, "duplicate") == 0, "redelivered records the first had sent"
    assert outcome(second, topic, "accepted") == total - committed_total


async def test_poison_record_without_dead_letter_topic_blocks_only_its_partition(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, tag, group = unique("poison"), unique("id"), unique("g")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    ledger = Ledger(topic)

    def batch(partition: int, start: int, count: int, prefix: str = "") -> list[Message]:
        ids = [f"{tag}-p{partition}{prefix}-{j}" for j in range(3)]
        return [
            Message(None, json.dumps({"id": ids[i % 3], "n": i}).encode(), partition=partition)
            for i in range(start, start + count)
        ]

    def key_of(value: Any) -> str:
        return str(value["id"])

    poison_at = 15
    head = batch(0, 0, poison_at)
    tail = batch(0, 100, 15, prefix="after")
    messages = [*head, Message(None, b"not json {", partition=0), *tail]
    for p in range(1, PARTITIONS):
        messages += batch(p, 0, 30)
    await produce(bootstrap, ledger, messages, key_of=key_of)
    assert ledger.ends[0] == poison_at + 1 + 15

    bridge = bridges.start(recorder(topic, key="{value.id}"), group_id=group, name="poison")
    others = {p: ledger.ends[p] for p in range(1, PARTITIONS)}
    await until(
        lambda: bridge.committed(topic),
        lambda c: c.get(0) == poison_at and all(c.get(p) == e for p, e in others.items()),
        f"partition 0 committed up to the poison ({poison_at}), the others to {others}",
    )
    blocked = bridge.per_partition("restate_bridge_partition_blocked", topic)
    assert blocked.get(0) == 1, blocked
    assert not any(blocked.get(p) for p in others), blocked
    line = re.search(
        rf"ERROR .*partition {re.escape(topic)}-0 blocked at offset {poison_at}: route rec: "
        r"(.*not JSON.*)",
        bridge.log(),
    )
    assert line is not None, bridge.log()[-3000:]

    # the other partitions keep going; partition 0 stays where it is
    more = [m for p in range(1, PARTITIONS) for m in batch(p, 30, 10)]
    more += batch(0, 200, 5, prefix="later")
    await produce(bootstrap, ledger, more, key_of=key_of)
    others = {p: ledger.ends[p] for p in range(1, PARTITIONS)}
    await until(
        lambda: bridge.committed(topic),
        lambda c: all(c.get(p) == e for p, e in others.items()),
        f"the other partitions committed up to {others}",
    )
    assert bridge.committed(topic)[0] == poison_at
    assert bridge.per_partition("restate_bridge_partition_blocked", topic).get(0) == 1
    assert bridge.readyz()[0] == 200  # a blocked partition is an alert, not a dead worker

    expected = ledger.expected()
    before_poison = {k: v for k, v in expected.items() if f"{tag}-p0-" in k}
    fetched_with_it = {k: v for k, v in expected.items() if k.startswith(f"{tag}-p0after")}
    produced_later = {k: v for k, v in expected.items() if k.startswith(f"{tag}-p0later")}
    healthy = {k: v for k, v in expected.items() if not k.startswith(f"{tag}-p0")}
    sizes = [len(before_poison), len(fetched_with_it), len(produced_later), len(healthy)]
    assert sizes == [3, 3, 3, 9], sizes
    await assert_states(client, {**before_poison, **healthy})
    # records behind the poison in the same fetch may be sent (once, in order); nothing later is
    for key, got in (await states(client, sorted(fetched_with_it))).items():
        assert got == fetched_with_it[key][: len(got)], (key, got)
    assert await states(client, sorted(produced_later)) == {k: [] for k in produced_later}
