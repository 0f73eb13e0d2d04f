"""Proofs of flow control: the pending bound, the lag value, per-route caps, ordering modes.

The counting proxy (tests/stack/proxy.py) sits between the bridge and Restate's ingress: it sees
every ``/send`` (start, end, idempotency key) and can hold, slow down or refuse them. The default
idempotency key ``{topic}-{partition}-{offset}:route`` tells each send's record.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from bridge.ingress import Client
from tests.helpers import hold_for, recorded, recorded_as, recorder, route, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.ledger import outcome
from tests.stack.proxy import IngressProxy, Send, max_overlap

pytestmark = pytest.mark.integration


def ping(topic: str, *, name: str, **fields: object) -> str:
    """A route calling the ``Greeter`` service's ``ping`` (no input) once per record."""
    return route(
        name=name,
        topic=topic,
        target="service",
        service="Greeter",
        handler="ping",
        body="none",
        **fields,
    )


def by_partition(sends: list[Send]) -> dict[int, list[Send]]:
    out: dict[int, list[Send]] = defaultdict(list)
    for s in sorted(sends, key=lambda s: s.start):
        out[s.partition_offset[0]].append(s)
    return dict(out)


async def test_pending_records_never_exceed_max_pending_records(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    topic, tag, bound, total = unique("bound"), unique("k"), 40, 300
    await create_topics(broker.bootstrap_servers, [topic], partitions=2)
    # one key per record: every fetched record is sent at once, so the ingress holds them all
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(f"{tag}-{i}".encode(), str(i).encode()) for i in range(total)],
    )
    proxy.hold()
    bridge = bridges.start(
        recorder(topic),
        group_id=unique("g"),
        ingress_url=proxy.url,
        delivery=f"max_pending_records = {bound}",
    )
    seen: list[float] = []

    def pending() -> float:
        value = bridge.value("restate_bridge_pending_records")
        seen.append(value)
        return value

    await until(pending, lambda v: v == bound, f"{bound} records pending", interval=0.05)
    await until(lambda: len(proxy.held()), lambda n: n == bound, f"{bound} sends held")
    await until(
        lambda: bridge.per_partition("restate_bridge_consumer_lag", topic),
        lambda lag: sum(lag.values()) == total - bound,
        "the lag updated to the unfetched rest",
    )

    def bounded() -> None:
        assert pending() <= bound, seen
        # not one record more was fetched: the ingress saw exactly the pending ones
        assert len(proxy.snapshot()) == bound
        lag = bridge.per_partition("restate_bridge_consumer_lag", topic)
        assert sum(lag.values()) == total - bound, lag

    await until(bounded, hold_for(1.5), "the bound holding for 1.5 s", interval=0.1)
    proxy.release()
    await until(
        lambda: outcome(bridge, topic, "accepted"),
        lambda n: n == total,
        "all accepted",
        interval=0.1,
    )
    await until(pending, lambda v: v == 0, "nothing pending", interval=0.05)
    assert max(seen) == bound, "the bound was never reached: nothing was tested"
    assert max_overlap(proxy.snapshot()) == bound
    await recorded_as(client, f"{tag}-{total - 1}", [total - 1])


async def test_consumer_lag_is_the_unfetched_count_while_the_ingress_is_down(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy
) -> None:
    topic, tag, bound = unique("lag"), unique("k"), 20
    ends = {0: 100, 1: 60}
    await create_topics(broker.bootstrap_servers, [topic], partitions=2)
    await produce(
        broker.bootstrap_servers,
        topic,
        [
            Message(f"{tag}-{p}-{i}".encode(), b"1", partition=p)
            for p, n in ends.items()
            for i in range(n)
        ],
    )
    # Restate "down" behind a load balancer: every /send answers 503, fetching pauses
    proxy.refuse = -1
    bridge = bridges.start(
        recorder(topic),
        group_id=unique("g"),
        ingress_url=proxy.url,
        wait_ready=False,
        delivery=f"max_pending_records = {bound}",
    )
    await until(
        lambda: bridge.value("restate_bridge_pending_records"),
        lambda v: v == bound,
        f"{bound} records fetched and stuck",
    )

    def fetched() -> dict[int, int]:
        """Per partition, how many records the bridge fetched (each was sent, and refused)."""
        last: dict[int, int] = {}
        for s in proxy.snapshot():
            p, offset = s.partition_offset
            last[p] = max(last.get(p, 0), offset + 1)
        return last

    def lag_is_exact() -> None:
        got = fetched()
        assert sum(got.values()) == bound, got
        lag = bridge.per_partition("restate_bridge_consumer_lag", topic)
        assert lag == {p: end - got.get(p, 0) for p, end in ends.items()}, (lag, got)
        assert bridge.value("restate_bridge_ingress_errors_total", reason="http_5xx") > 0
        assert bridge.committed(topic) == {}

    await until(
        lambda: bridge.per_partition("restate_bridge_consumer_lag", topic).keys() == ends.keys(),
        bool,
        "a lag series per partition",
    )
    await until(lag_is_exact, hold_for(1.5), "the lag exact for 1.5 s", interval=0.2)

    proxy.refuse = 0
    await until(
        lambda: (
            bridge.per_partition("restate_bridge_consumer_lag", topic),
            bridge.committed(topic),
        ),
        lambda lc: lc == ({0: 0, 1: 0}, ends),
        "lag 0 and everything committed once the ingress is back",
    )


async def test_route_max_in_flight_caps_that_route_only(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy
) -> None:
    topic, total, cap = unique("cap"), 40, 3
    await create_topics(broker.bootstrap_servers, [topic])
    await produce(broker.bootstrap_servers, topic, [Message(None, b"1") for _ in range(total)])
    proxy.delay = 0.1
    routes = ping(topic, name="capped", max_in_flight=cap) + ping(topic, name="free")
    bridge = bridges.start(routes, group_id=unique("g"), ingress_url=proxy.url)
    await until(
        lambda: outcome(bridge, topic, "accepted"),
        lambda n: n == 2 * total,
        "every record accepted on both routes",
    )
    capped = proxy.snapshot(lambda s: s.idempotency_key.endswith(":capped"))
    free = proxy.snapshot(lambda s: s.idempotency_key.endswith(":free"))
    assert (len(capped), len(free)) == (total, total)
    assert max_overlap(capped) == cap
    assert max_overlap(free) > cap


async def test_partition_ordering_sends_one_at_a_time_per_partition_in_offset_order(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy
) -> None:
    topic, per_partition = unique("ordp"), 25
    await create_topics(broker.bootstrap_servers, [topic], partitions=2)
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(None, b"1", partition=p) for p in (0, 1) for _ in range(per_partition)],
    )
    proxy.delay = 0.03
    bridge = bridges.start(
        ping(topic, name="seq", ordering="partition"),
        group_id=unique("g"),
        ingress_url=proxy.url,
    )
    await until(
        lambda: outcome(bridge, topic, "accepted"),
        lambda n: n == 2 * per_partition,
        "every record accepted",
    )
    parts = by_partition(proxy.snapshot())
    for p, sends in parts.items():
        assert [s.partition_offset[1] for s in sends] == list(range(per_partition)), p
        assert max_overlap(sends) == 1, f"partition {p} had sends in parallel"
    assert max_overlap(proxy.snapshot()) == 2, "the two partitions did not go in parallel"


async def test_no_ordering_sends_one_objects_records_in_parallel(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    topic, key, total = unique("ordn"), unique("one"), 20
    await create_topics(broker.bootstrap_servers, [topic])
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(key.encode(), str(i).encode()) for i in range(total)],
    )
    proxy.delay = 0.2
    bridge = bridges.start(
        recorder(topic, name="par", ordering="none"),
        group_id=unique("g"),
        ingress_url=proxy.url,
    )
    await until(lambda: outcome(bridge, topic, "accepted"), lambda n: n == total, "all accepted")
    # one object key, yet the sends overlapped: ordering = "none" gives up the per-key lane
    assert max_overlap(proxy.snapshot()) >= total // 2
    got = await until(recorded(client, key), lambda g: len(g) == total, f"{total} recorded")
    assert sorted(got) == list(range(total))
