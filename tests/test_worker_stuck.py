"""Stuck is visible and bounded, against the real stack (broker, Restate, bridge processes).

A record that stays unfinished holds back at most ``max_pending_per_partition`` records of its
partition, while the other partitions flow; the oldest-unfinished age and the committed lag say so
with their values. A blocked partition stays blocked (not fetched again, not re-sent, still
reported) when a rebalance gives it back to the same process.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.helpers import missing_service, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.ledger import outcome

pytestmark = pytest.mark.integration


def sent(bridge: BridgeProcess, topic: str) -> int:
    """Records of ``topic`` Restate accepted, the first time or again (answered as a duplicate)."""
    return outcome(bridge, topic, "accepted") + outcome(bridge, topic, "duplicate")


async def test_a_stuck_record_holds_back_at_most_max_pending_per_partition(
    broker: Broker, bridges: BridgeFactory
) -> None:
    bootstrap, bound = broker.bootstrap_servers, 20
    topic, dlq, tag = unique("stuck"), unique("stuck-dlq"), unique("k")
    await create_topics(bootstrap, [topic, dlq], partitions=2)
    ok, stuck = [("kind", b"ok")], [("kind", b"stuck")]
    # partition 0: a record for a service Restate does not know (404, retried for the grace
    # period) and 100 good ones behind it; partition 1: 100 good ones
    messages = [Message(b"x", b"{}", stuck, partition=0)]
    for p in (0, 1):
        messages += [
            Message(f"{tag}-{p}-{i % 5}".encode(), json.dumps({"n": i}).encode(), ok, partition=p)
            for i in range(100)
        ]
    await produce(bootstrap, topic, messages)
    bridge = bridges.start(
        recorder(topic, match={"header.kind": "ok"}) + missing_service(topic, "stuck"),
        group_id=unique("g"),
        dead_letter_topic=dlq,
        delivery=f'max_pending_per_partition = {bound}\nunknown_target_grace = "25s"',
    )

    # partition 1 flows to its end; partition 0 stops fetching at the bound
    await until(
        lambda: bridge.committed(topic).get(1),
        lambda c: c == 100,
        "partition 1 committed to its end",
    )
    lag = await until(
        lambda: bridge.per_partition("restate_bridge_consumer_lag", topic),
        lambda lag: lag.get(0) == 101 - bound,
        f"partition 0 fetched exactly {bound} records (consumer lag {101 - bound})",
    )
    assert lag.get(1) == 0, lag
    # the stuck record plus bound - 1 good ones: no more were sent, however long it lasts
    assert sent(bridge, topic) == 100 + bound - 1
    assert 0 not in bridge.committed(topic)
    committed_lag = bridge.per_partition("restate_bridge_committed_lag", topic)
    assert committed_lag == {0: 101, 1: 0}, committed_lag  # nothing of partition 0 committed
    ages = await until(
        lambda: bridge.per_partition("restate_bridge_oldest_unfinished_age_seconds", topic),
        lambda ages: ages.get(0, 0) > 2,
        "the stuck record's age growing",
    )
    assert ages.get(1) == 0, ages
    later = await until(
        lambda: bridge.per_partition("restate_bridge_oldest_unfinished_age_seconds", topic),
        lambda later: later.get(0, 0) >= ages[0] + 1,
        "the age still growing",
    )
    assert sent(bridge, topic) == 100 + bound - 1
    rows = {p["partition"]: p for p in bridge.status_json()["partitions"] if p["topic"] == topic}
    assert rows[0]["committed_lag"] == 101
    assert rows[0]["oldest_unfinished_age"] >= later[0]
    assert rows[0]["lag"] == 101 - bound
    assert rows[1]["committed_lag"] == 0

    # the grace ends: the record is dead-lettered and partition 0 catches up
    await until(
        lambda: bridge.committed(topic).get(0),
        lambda c: c == 101,
        "partition 0 committed to its end after the dead letter",
    )
    assert outcome(bridge, topic, "dead_lettered") == 1
    assert sent(bridge, topic) == 200
    await until(
        lambda: bridge.per_partition("restate_bridge_committed_lag", topic),
        lambda c: c == {0: 0, 1: 0},
        "no committed lag left",
    )
    assert bridge.per_partition("restate_bridge_oldest_unfinished_age_seconds", topic) == {
        0: 0,
        1: 0,
    }


async def test_a_blocked_partition_stays_blocked_when_a_rebalance_gives_it_back(
    broker: Broker, bridges: BridgeFactory
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, tag, group = unique("held"), unique("id"), unique("g")
    await create_topics(bootstrap, [topic], partitions=2)

    def good(partition: int, start: int, count: int) -> list[Message]:
        value = {"id": f"{tag}-{partition}"}
        return [
            Message(None, json.dumps({**value, "n": i}).encode(), partition=partition)
            for i in range(start, start + count)
        ]

    poison_at = 5
    await produce(
        bootstrap,
        topic,
        [
            *good(0, 0, 5),
            Message(None, b"not json {", partition=0),
            *good(0, 5, 5),
            *good(1, 0, 10),
        ],
    )
    routes = recorder(topic, key="{value.id}")
    first = bridges.start(routes, group_id=group, name="first")
    await until(
        lambda: first.committed(topic),
        lambda c: c == {0: poison_at, 1: 10},
        "partition 0 committed up to the poison, partition 1 to its end",
    )
    assert first.per_partition("restate_bridge_partition_blocked", topic).get(0) == 1
    sent_before = sent(first, topic)

    # a second member joins (a rebalance revokes everything from the first), then leaves
    second = bridges.start(routes, group_id=group, name="second")
    await until(
        lambda: (
            second.per_partition("restate_bridge_consumer_lag", topic)
            or second.per_partition("restate_bridge_partition_blocked", topic)
        ),
        bool,
        "the second member owning a partition",
    )
    # SIGTERM: the member leaves the group at once (no session timeout to wait out)
    assert await asyncio.to_thread(second.terminate) == 0
    await until(
        lambda: first.log().count("partitions assigned:"),
        lambda n: n >= 3,
        "the first member assigned everything again after the second left",
    )
    await until(
        lambda: first.per_partition("restate_bridge_partition_blocked", topic),
        lambda b: b.get(0) == 1,
        "partition 0 reported blocked again",
    )
    log = first.log()
    blocks = re.findall(rf"partition {re.escape(topic)}-0 blocked at offset {poison_at}: ", log)
    assert len(blocks) == 1, log[-3000:]  # found once, never fetched and planned again
    assert re.search(rf"partition {re.escape(topic)}-0 stays blocked at offset {poison_at}", log)
    # not fetched again: nothing behind the poison was re-sent, no second block
    await produce(bootstrap, topic, good(1, 10, 5))
    await until(
        lambda: first.committed(topic).get(1),
        lambda c: c == 15,
        "partition 1 still flowing",
    )
    assert sent(first, topic) == sent_before + 5
    assert first.committed(topic)[0] == poison_at
    partitions = first.status_json()["partitions"]
    [row] = [p for p in partitions if p["topic"] == topic and p["partition"] == 0]
    assert (row["blocked"], row["blocked_at"], row["blocked_route"]) == (1, poison_at, "rec"), row
    assert "not JSON" in row["blocked_reason"], row
    assert row["oldest_unfinished_age"] > 0, row
    assert first.readyz()[0] == 200
