"""What a test produced and what must arrive: a ledger per topic, the group's committed offsets,
the Recorder objects' state and Restate's invocation table, and the bridge's metrics by label."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bridge.ingress import Client, IngressError
from tests.helpers import until

from . import kafka_io
from .bridge_process import BridgeProcess
from .kafka_io import Message
from .restate import RestateServer

PARTITIONS = 4


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


# -- the bridge's metrics ---------------------------------------------------------------------


def outcome(bridge: BridgeProcess, topic: str, which: str) -> int:
    """How many of ``topic``'s records ended as ``which`` (accepted, dead_lettered, ...)."""
    return int(bridge.value("restate_bridge_messages_total", topic=topic, outcome=which))


def gauge(bridge: BridgeProcess, name: str) -> float | None:
    """The first sample of ``name``; None when the bridge exports none."""
    found = bridge.samples(name)
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
