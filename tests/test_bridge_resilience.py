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
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bridge.ingress import Client, IngressError
from tests.helpers import hold_for, unique, until
from tests.stack import kafka_io
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics
from tests.stack.logs import keep_log
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

pytestmark = pytest.mark.integration

PARTITIONS = 4


def recorder_route(topic: str, *, key: str = "{key}", name: str = "rec") -> str:
    return f"""
[[routes]]
name = "{name}"
topic = "{topic}"
target = "object"
service = "Recorder"
handler = "record"
key = "{key}"
"""


# -- producing, and what must arrive ---------------------------------------------------------


@dataclass
class Ledger:
    """Produced to a topic: per key the values in offset order; per partition the end."""

    topic: str
    _rows: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    count: int = 0

    def expected(self, keys: Iterable[str] | None = None) -> dict[str, list[Any]]:
        chosen = self._rows if keys is None else {k: self._rows.get(k, []) for k in keys}
        return {k: [v for _, v in sorted(rows, key=lambda r: r[0])] for k, rows in chosen.items()}

    @property
    def keys(self) -> list[str]:
        return sorted(self._rows)

    def add(self, key: str, partition: int, offset: int, value: Any) -> None:
        self._rows.setdefault(key, []).append((offset, value))
        self.ends[partition] = max(self.ends.get(partition, 0), offset + 1)
        self.count += 1


async def produce(
    bootstrap: str, ledger: Ledger, messages: Sequence[Message], *, key_of: Callable[[Any], str]
) -> None:
    """Produce ``messages``; record each JSON value under ``key_of(value)`` at its real offset."""
    metas = await kafka_io.produce(bootstrap, ledger.topic, messages)
    for m, meta in zip(messages, metas, strict=True):
        assert m.value is not None
        try:
            value = json.loads(m.value)
        except ValueError:
            ledger.ends[meta.partition] = max(ledger.ends.get(meta.partition, 0), meta.offset + 1)
            continue  # poison: never arrives anywhere
        ledger.add(key_of(value), meta.partition, meta.offset, value)


async def produce_keyed(
    bootstrap: str, ledger: Ledger, keys: Sequence[str], start: int, count: int
) -> None:
    """Produce records ``start`` .. ``start + count - 1`` of the :func:`keyed` sequence."""
    await produce(bootstrap, ledger, keyed(keys, start, count), key_of=by_key(keys))


def keyed(keys: Sequence[str], start: int, count: int) -> list[Message]:
    """``count`` records ``{"n": i}`` round-robin over ``keys`` (the key picks the partition)."""
    return [
        Message(keys[i % len(keys)].encode(), json.dumps({"n": i}).encode())
        for i in range(start, start + count)
    ]


def by_key(keys: Sequence[str]) -> Callable[[Any], str]:
    """The key :func:`keyed` gave the record with this value."""
    return lambda value: keys[value["n"] % len(keys)]


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets, read with the admin API (joins no group)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await _committed(admin, group, topic)
    finally:
        await admin.close()


async def _committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    offsets = await admin.list_consumer_group_offsets(
        group, partitions=[TopicPartition(topic, p) for p in range(PARTITIONS)]
    )
    return {tp.partition: om.offset for tp, om in offsets.items() if om.offset >= 0}


async def wait_committed(bootstrap: str, group: str, ledger: Ledger, what: str) -> None:
    """Wait until the group committed the end of every partition that got records.

    The group's offsets, not one bridge's metric: a partition that an earlier bridge finished
    is never committed again.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await until(
            lambda: _committed(admin, group, ledger.topic),
            lambda c: all(c.get(p) == end for p, end in ledger.ends.items()),
            f"{what}: group committed up to {ledger.ends}",
            interval=0.3,
        )
    finally:
        await admin.close()


# -- polling -----------------------------------------------------------------------------------


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(bridge: BridgeProcess, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` with their labels (a dead bridge fails the test)."""
    everything = bridge.metrics()
    out = []
    for sample, value in everything.items():
        base, _, labels = sample.partition("{")
        if base == name:
            out.append((dict(_LABEL.findall(labels)), value))
    return out


def outcome(bridge: BridgeProcess, topic: str, which: str) -> int:
    return int(
        sum(
            v
            for labels, v in samples(bridge, "restate_bridge_messages_total")
            if labels.get("topic") == topic and labels.get("outcome") == which
        )
    )


def per_partition(bridge: BridgeProcess, name: str, topic: str) -> dict[int, int]:
    return {
        int(labels["partition"]): int(v)
        for labels, v in samples(bridge, name)
        if labels.get("topic") == topic
    }


def committed_metric(bridge: BridgeProcess, topic: str) -> dict[int, int]:
    return per_partition(bridge, "restate_bridge_committed_offset", topic)


def gauge(bridge: BridgeProcess, name: str) -> float | None:
    found = samples(bridge, name)
    return found[0][1] if found else None


# -- what Restate holds ------------------------------------------------------------------------


async def states(client: Client, keys: Sequence[str]) -> dict[str, Any]:
    async def one(key: str) -> Any:
        try:
            return await client.object("Recorder", key, "get").request()
        except IngressError as exc:  # Restate restarting: not there yet
            return f"unavailable: {exc}"

    return dict(zip(keys, await asyncio.gather(*(one(k) for k in keys)), strict=True))


def describe_diff(actual: dict[str, Any], expected: dict[str, list[Any]]) -> str:
    lines = []
    for key, want in expected.items():
        got = actual.get(key)
        if got == want:
            continue
        if not isinstance(got, list):
            lines.append(f"{key}: {got!r}")
            continue
        seen = Counter(json.dumps(v, sort_keys=True) for v in got)
        dupes = [v for v, n in seen.items() if n > 1]
        missing = [v for v in want if json.dumps(v, sort_keys=True) not in seen]
        first = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )
        lines.append(
            f"{key}: {len(got)} entries, want {len(want)}; duplicates {dupes[:3]}, "
            f"missing {missing[:3]}, first difference at index {first}"
        )
    return "\n".join(lines[:20])


async def assert_states(client: Client, expected: dict[str, list[Any]]) -> None:
    """Every key's state ends up exactly its expected list (exactly once, in offset order)."""
    keys = sorted(expected)
    try:
        await until(lambda: states(client, keys), lambda s: s == expected, "states complete")
    except AssertionError:
        actual = await states(client, keys)
        raise AssertionError(
            f"Recorder state differs from what was produced:\n{describe_diff(actual, expected)}"
        ) from None


def record_invocations(server: RestateServer, keys: Sequence[str]) -> list[dict[str, Any]]:
    quoted = ", ".join(f"'{k}'" for k in keys)
    return server.query(
        "SELECT target_service_key AS key, idempotency_key AS idem, status FROM sys_invocation "
        f"WHERE target_service_name = 'Recorder' AND target_handler_name = 'record' "
        f"AND target_service_key IN ({quoted})"
    )


async def assert_one_invocation_per_record(server: RestateServer, ledger: Ledger) -> None:
    """Restate holds exactly one ``record`` invocation per produced record, all completed."""
    rows = await until(
        lambda: record_invocations(server, ledger.keys),
        lambda rows: len(rows) >= ledger.count and all(r["status"] == "completed" for r in rows),
        f"{ledger.count} completed invocations",
    )
    idems = Counter(r["idem"] for r in rows)
    assert len(rows) == ledger.count, f"{len(rows)} invocations for {ledger.count} records"
    assert len(idems) == ledger.count, [k for k, n in idems.items() if n > 1][:5]
    per_key = Counter(r["key"] for r in rows)
    assert per_key == Counter({k: len(v) for k, v in ledger.expected().items()})
    topic_prefix = f"{ledger.topic}-"
    assert all(str(k).startswith(topic_prefix) for k in idems), list(idems)[:3]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def own_restate(
    request: pytest.FixtureRequest, tmp_path: Path, handlers: HandlerServer
) -> Iterator[RestateServer]:
    """A Restate server for one test, which may stop and restart it."""
    server = RestateServer(tmp_path / "restate")
    server.start()
    keep_log(request.config, server.workdir / "restate.log")
    try:
        handlers.register_with(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own_client(own_restate: RestateServer) -> AsyncIterator[Client]:
    async with Client(own_restate.ingress_url, timeout=10) as c:
        yield c


# -- the tests -----------------------------------------------------------------------------------


async def test_kill_9_mid_stream_then_restart_has_exactly_once_effects(
    broker: Broker, bridges: BridgeFactory, client: Client, restate: RestateServer
) -> None:
    bootstrap, total = broker.bootstrap_servers, 2000
    topic, tag, group = unique("crash"), unique("k"), unique("g")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    keys = [f"{tag}-{i}" for i in range(50)]
    ledger = Ledger(topic)
    await produce_keyed(bootstrap, ledger, keys, 0, total)
    routes = recorder_route(topic)

    first = bridges.start(routes, group_id=group, name="first")
    accepted_seen = await until(
        lambda: outcome(first, topic, "accepted"), lambda n: n >= 700, "700 accepted",
        interval=0.02,
    )  # fmt: skip
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
        recorder_route(topic), group_id=group, ingress_url=server.ingress_url, name="outage"
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
        assert committed_metric(bridge, topic) == part1_ends
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
    routes = recorder_route(topic)
    survivor = bridges.start(routes, group_id=group, name="survivor")
    victim = bridges.start(routes, group_id=group, name="victim")

    def lag_partitions(bridge: BridgeProcess) -> set[int]:
        return set(per_partition(bridge, "restate_bridge_consumer_lag", topic))

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
    bootstrap, total = broker.bootstrap_servers, 2000
    topic, tag, group = unique("drain"), unique("k"), unique("g")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    keys = [f"{tag}-{i}" for i in range(50)]
    ledger = Ledger(topic)
    await produce_keyed(bootstrap, ledger, keys, 0, total)
    routes = recorder_route(topic)

    first = bridges.start(
        routes, group_id=group, name="first", delivery="max_pending_records = 300"
    )
    await until(
        lambda: outcome(first, topic, "accepted"), lambda n: n >= 100, "100 accepted", interval=0.02
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

    bridge = bridges.start(recorder_route(topic, key="{value.id}"), group_id=group, name="poison")
    others = {p: ledger.ends[p] for p in range(1, PARTITIONS)}
    await until(
        lambda: committed_metric(bridge, topic),
        lambda c: c.get(0) == poison_at and all(c.get(p) == e for p, e in others.items()),
        f"partition 0 committed up to the poison ({poison_at}), the others to {others}",
    )
    blocked = per_partition(bridge, "restate_bridge_partition_blocked", topic)
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
        lambda: committed_metric(bridge, topic),
        lambda c: all(c.get(p) == e for p, e in others.items()),
        f"the other partitions committed up to {others}",
    )
    assert committed_metric(bridge, topic)[0] == poison_at
    assert per_partition(bridge, "restate_bridge_partition_blocked", topic).get(0) == 1
    assert bridge.readyz()[0] == 200  # a blocked partition is an alert, not a dead worker

    expected = ledger.expected()
    before_poison = {k: v for k, v in expected.items() if f"{tag}-p0-" in k}
    fetched_with_it = {k: v for k, v in expected.items() if k.startswith(f"{tag}-p0after")}
    produced_later = {k: v for k, v in expected.items() if k.startswith(f"{tag}-p0later")}
    healthy = {k: v for k, v in expected.items() if not k.startswith(f"{tag}-p0")}
    assert (len(before_poison), len(fetched_with_it), len(produced_later), len(healthy)) == (
        3, 3, 3, 9
    )  # fmt: skip
    await assert_states(client, {**before_poison, **healthy})
    # records behind the poison in the same fetch may be sent (once, in order); nothing later is
    for key, got in (await states(client, sorted(fetched_with_it))).items():
        assert got == fetched_with_it[key][: len(got)], (key, got)
    assert await states(client, sorted(produced_later)) == {k: [] for k in produced_later}
