"""The operator's controls on a running bridge (real broker, real Restate, the counting proxy):
pausing and resuming routes and topics, and releasing blocked partitions, through the admin API.

What each test proves is what the bridge guarantees: a paused route sends nothing new while what
finished keeps committing, its partitions stop fetching when only paused routes read them, the
pause holds across rebalances, and after a resume every record arrives once, in key order; a
blocked partition is released without a restart, by a retry or by a skip (to a topic, with the
operator's reason in the headers, or logged), and commits past the record.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bridge.ingress import Client
from tests.helpers import hold_for, recorded_as, recorder, route, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.proxy import IngressProxy, Send

pytestmark = pytest.mark.integration

TOKEN = "operator-" + "c41d-unique-token"


def keyed(n: int, keys: int = 4, partition: int | None = 0, **headers: str) -> Message:
    """Record ``n`` for Kafka key ``k{n % keys}``, its value ``{"n": n}``."""
    return Message(
        f"k{n % keys}".encode(),
        json.dumps({"n": n}).encode(),
        [(k, v.encode()) for k, v in headers.items()],
        partition=partition,
    )


def expected(records: list[Message]) -> dict[str, list[Any]]:
    """Per Kafka key, the values a Recorder keyed by it ends up with, in order."""
    out: dict[str, list[Any]] = {}
    for m in records:
        assert m.key is not None
        assert m.value is not None
        out.setdefault(m.key.decode(), []).append(json.loads(m.value))
    return out


async def delivered(client: Client, tag: str, records: list[Message]) -> None:
    """Every record arrived once, in key order (the Recorder keeps every input it gets)."""
    for key, values in expected(records).items():
        await recorded_as(client, f"{tag}-{key}", values)


def sends_of(proxy: IngressProxy, route: str) -> list[Send]:
    return proxy.snapshot(lambda s: s.idempotency_key.endswith(f":{route}"))


def watermark(proxy: IngressProxy, route: str, partition: int = 0) -> int:
    """The first offset of ``partition`` not yet accepted for ``route``: what may be committed."""
    accepted = {
        s.partition_offset[1]
        for s in sends_of(proxy, route)
        if s.status == 202 and s.partition_offset[0] == partition
    }
    n = 0
    while n in accepted:
        n += 1
    return n


def paused_partitions(bridge: BridgeProcess, topic: str) -> dict[int, float]:
    return bridge.per_partition("restate_bridge_partition_paused", topic)


async def quiet(proxy: IngressProxy, seconds: float = 2.0) -> int:
    """Wait for the sends under way to end, then assert that no new one starts for ``seconds``."""
    await until(lambda: [s for s in proxy.snapshot() if s.end is None], lambda u: not u, "idle")
    count = len(proxy.snapshot())

    def unchanged() -> int:
        now = len(proxy.snapshot())
        assert now == count, f"{now - count} sends while paused"
        return now

    await until(unchanged, hold_for(seconds), f"no new send for {seconds}s")
    return count


def started_with_token(
    bridges: BridgeFactory, routes: str, tmp_path: Path, *, group_id: str, ingress_url: str
) -> BridgeProcess:
    """A bridge whose listener wants :data:`TOKEN` (its reads send it)."""
    token_file = tmp_path / "listener-token"
    token_file.write_text(TOKEN + "\n")
    proc = bridges.process("bridge")
    proc.token = TOKEN
    text = bridges.routes(routes, group_id=group_id, metrics_extra=f'token_file = "{token_file}"\n')
    text = text.replace("127.0.0.1:0", f"127.0.0.1:{proc.metrics_port}")
    proc.write_routes(text.replace(bridges.restate.ingress_url, ingress_url))
    proc.start()
    return proc


# -- pause and resume -------------------------------------------------------------------------


async def test_a_paused_route_sends_nothing_new_commits_what_finished_and_resumes_in_order(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, tag = unique("pause"), unique("p")
    await create_topics(bootstrap, [topic])
    proxy.delay = 0.05  # 4 keys in parallel: about 80 sends a second
    records = [keyed(n) for n in range(200)]
    await produce(bootstrap, topic, records)
    bridge = bridges.start(
        recorder(topic, key=f"{tag}-{{key}}"), group_id=unique("g"), ingress_url=proxy.url
    )
    await until(lambda: len(proxy.answered()), lambda n: n >= 20, "20 records sent")

    status, answer = bridge.post("/admin/routes/rec/pause")
    assert (status, answer["status"], answer["paused"]) == (200, "ok", True), answer
    assert answer["paused_partitions"] == [{"topic": topic, "partition": 0}]
    sent = await quiet(proxy)  # the sends under way finished; none started since
    assert sent < 200
    # what finished commits: up to the first record not accepted
    first_open = watermark(proxy, "rec")
    await until(lambda: bridge.committed(topic).get(0), lambda c: c == first_open, "committed")
    assert paused_partitions(bridge, topic) == {0: 1.0}
    assert bridge.value("restate_bridge_route_paused", route="rec") == 1
    controls = bridge.status_json()["controls"]
    assert controls["paused_routes"] == ["rec"]
    assert controls["paused_partitions"] == [{"topic": topic, "partition": 0}]
    assert bridge.post("/admin/routes/rec/pause")[1]["changed"] is False  # twice is fine

    # the partition stops fetching: records produced now are not even fetched, and no fetch
    # response tells the bridge they exist (its lag, from the fetched high watermark, stays)
    pending = bridge.value("restate_bridge_pending_records")
    lag = bridge.value("restate_bridge_consumer_lag", topic=topic)
    more = [keyed(n) for n in range(200, 220)]
    await produce(bootstrap, topic, more)
    await quiet(proxy, 1.5)
    assert bridge.value("restate_bridge_pending_records") == pending
    assert bridge.value("restate_bridge_consumer_lag", topic=topic) == lag

    assert bridge.post("/admin/routes/rec/resume")[0] == 200
    await delivered(client, tag, records + more)
    await until(lambda: bridge.committed(topic).get(0), lambda c: c == 220, "committed to 220")
    keys = [s.idempotency_key for s in proxy.answered()]
    assert len(keys) == len(set(keys)) == 220  # each record sent once
    assert paused_partitions(bridge, topic) == {0: 0.0}
    assert bridge.value("restate_bridge_route_paused", route="rec") == 0
    assert bridge.status_json()["controls"]["paused_routes"] == []


async def test_a_paused_route_waits_while_another_route_of_its_partition_goes_on(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, tag = unique("shared"), unique("s")
    await create_topics(bootstrap, [topic])
    routes = recorder(topic, name="a", key=f"{tag}-a-{{key}}") + recorder(
        topic, name="b", key=f"{tag}-b-{{key}}"
    )
    bridge = bridges.start(routes, group_id=unique("g"), ingress_url=proxy.url)
    assert bridge.post("/admin/routes/a/pause")[1]["paused_partitions"] == []
    records = [keyed(n) for n in range(30)]
    await produce(bootstrap, topic, records)

    for key, values in expected(records).items():
        await recorded_as(client, f"{tag}-b-{key}", values)
    await quiet(proxy, 1.5)
    assert sends_of(proxy, "a") == []
    # fetched (b reads the partition too), held for a: the commit stops at the first of them
    assert paused_partitions(bridge, topic) == {0: 0.0}
    assert bridge.value("restate_bridge_pending_records") == 30
    assert bridge.committed(topic).get(0, 0) == 0

    bridge.post("/admin/routes/a/resume")
    for key, values in expected(records).items():
        await recorded_as(client, f"{tag}-a-{key}", values)
    await until(lambda: bridge.committed(topic).get(0), lambda c: c == 30, "committed to 30")


async def test_a_pause_holds_across_rebalances_while_the_process_lives(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, tag, group = unique("rebal"), unique("r"), unique("g")
    await create_topics(bootstrap, [topic], partitions=4)
    routes = recorder(topic, key=f"{tag}-{{key}}")
    first = bridges.start(routes, group_id=group, ingress_url=proxy.url, name="first")
    first.post("/admin/routes/rec/pause")
    records = [keyed(n, keys=8, partition=n % 4) for n in range(40)]
    await produce(bootstrap, topic, records)
    await quiet(proxy, 1.5)
    assert proxy.snapshot() == []
    assert paused_partitions(first, topic) == dict.fromkeys(range(4), 1.0)

    # a second replica joins (it has no pause of its own): the first keeps its share paused
    second = bridges.start(routes, group_id=group, ingress_url=proxy.url, name="second")
    await until(lambda: len(paused_partitions(second, topic)), lambda n: n == 2, "shared")
    mine = set(paused_partitions(first, topic))
    theirs = set(paused_partitions(second, topic))
    assert len(mine) == 2
    assert mine.isdisjoint(theirs)
    assert paused_partitions(first, topic) == dict.fromkeys(mine, 1.0)
    await until(
        lambda: second.committed(topic), lambda c: c == dict.fromkeys(theirs, 10), "theirs done"
    )
    assert {s.partition_offset[0] for s in proxy.snapshot()} == theirs
    assert first.value("restate_bridge_pending_records") == 0  # paused before any fetch

    # it leaves: every partition comes back to the first, paused before anything is fetched
    assert second.terminate() == 0
    await until(lambda: len(paused_partitions(first, topic)), lambda n: n == 4, "all back")
    sent = await quiet(proxy, 2.0)
    assert paused_partitions(first, topic) == dict.fromkeys(range(4), 1.0)
    assert first.value("restate_bridge_pending_records") == 0
    assert "partitions [" in first.log()
    assert "stay paused by the operator" in first.log()

    first.post("/admin/routes/rec/resume")
    await delivered(client, tag, records)
    # the second committed its share before it left: the first has only its own to commit
    await until(lambda: first.committed(topic), lambda c: c == dict.fromkeys(mine, 10), "mine done")
    assert len(proxy.snapshot()) == sent + 20
    keys = [s.idempotency_key for s in proxy.answered()]
    assert len(set(keys)) == len(keys) == 40


async def test_pausing_a_topic_and_the_admin_api_refusals_with_a_token(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client, tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    first, second, tag = unique("one"), unique("two"), unique("t")
    await create_topics(bootstrap, [first, second])
    routes = route(
        name="rec",
        topics=[first, second],
        target="object",
        service="Recorder",
        handler="record",
        key=f"{tag}-{{topic}}-{{key}}",
    )
    bridge = started_with_token(
        bridges, routes, tmp_path, group_id=unique("g"), ingress_url=proxy.url
    )

    # the token, the content type, names the bridge does not know
    assert bridge.post(f"/admin/topics/{first}/pause", with_token=False)[0] == 401
    assert (
        bridge.post("/admin/partitions/x/0/release", {"action": "retry"}, with_token=False)[0]
        == 401
    )
    status, answer = bridge.post(
        f"/admin/topics/{first}/pause", raw=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert (status, answer["status"]) == (415, "error"), answer
    status, answer = bridge.post("/admin/topics/nope/pause")
    assert status == 404
    assert answer["detail"] == f"no topic named 'nope'; known topics: {first}, {second}"
    assert bridge.post("/admin/routes/nope/pause")[1]["detail"].endswith("known routes: rec")
    status, answer = bridge.post(f"/admin/partitions/{first}/0/release", {"action": "retry"})
    assert (status, answer["detail"]) == (409, f"partition {first}-0 is not blocked")
    assert bridge.post(f"/admin/partitions/{first}/0/release", {"action": "skip"})[0] == 400
    assert bridge.post("/admin/reload-nothing")[0] == 404

    assert bridge.post(f"/admin/topics/{first}/pause")[0] == 200
    records = [keyed(n) for n in range(10)]
    await produce(bootstrap, first, records)
    await produce(bootstrap, second, records)
    for key, values in expected(records).items():
        await recorded_as(client, f"{tag}-{second}-{key}", values)
    await quiet(proxy, 1.5)
    assert {s.path.split("/")[2] for s in proxy.snapshot()} == {
        f"{tag}-{second}-k{n}" for n in range(4)
    }
    assert paused_partitions(bridge, first) == {0: 1.0}
    assert paused_partitions(bridge, second) == {0: 0.0}
    assert bridge.value("restate_bridge_topic_paused", topic=first) == 1
    assert bridge.status_json()["controls"]["paused_topics"] == [first]

    assert bridge.post(f"/admin/topics/{first}/resume")[0] == 200
    for key, values in expected(records).items():
        await recorded_as(client, f"{tag}-{first}-{key}", values)
    assert bridge.value("restate_bridge_topic_paused", topic=first) == 0


# -- releasing blocked partitions -------------------------------------------------------------


def refuse_offsets(proxy: IngressProxy, refused: dict[tuple[int, int], int]) -> None:
    """Answer 400 to the sends of these (partition, offset)s, so many times each (-1: always)."""
    proxy.refuse_status = 400

    def refuse(send: Send) -> bool:
        at = send.partition_offset
        left = refused.get(at, 0)
        if left == 0:
            return False
        refused[at] = left - 1 if left > 0 else left
        return True

    proxy.refuse_matching = refuse


def blocked_rows(bridge: BridgeProcess) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = bridge.status_json()["controls"]["blocked"]
    return rows


async def test_retry_releases_a_blocked_partition_and_a_second_failure_blocks_it_again(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, tag = unique("retry"), unique("r")
    await create_topics(bootstrap, [topic])
    refuse_offsets(proxy, {(0, 3): 2})  # refused twice: the first retry blocks again
    records = [keyed(n, keys=2) for n in range(10)]
    await produce(bootstrap, topic, records)
    bridge = bridges.start(
        recorder(topic, key=f"{tag}-{{key}}"), group_id=unique("g"), ingress_url=proxy.url
    )
    await until(lambda: blocked_rows(bridge), bool, "blocked")
    [row] = blocked_rows(bridge)
    assert {k: row[k] for k in ("topic", "partition", "offset", "route")} == {
        "topic": topic,
        "partition": 0,
        "offset": 3,
        "route": "rec",
    }
    assert "400" in row["reason"]
    assert row["actions"] == ["retry", "skip"]
    await recorded_as(client, f"{tag}-k0", [{"n": n} for n in range(0, 10, 2)])  # k0 goes on
    await until(lambda: bridge.committed(topic).get(0), lambda c: c == 3, "committed to 3")
    assert bridge.per_partition("restate_bridge_partition_blocked", topic) == {0: 1.0}

    status, answer = bridge.post(f"/admin/partitions/{topic}/0/release", {"action": "retry"})
    assert status == 200, answer
    assert (answer["offset"], answer["action"], answer["route"]) == (3, "retry", "rec")
    await until(
        lambda: len(re.findall(rf"{re.escape(topic)}-0 blocked at offset 3", bridge.log())),
        lambda n: n == 2,
        "blocked again, visibly",
    )
    await until(lambda: blocked_rows(bridge), bool, "reported blocked again")

    status, answer = bridge.post(
        f"/admin/partitions/{topic}/0/release", {"action": "retry", "reason": "fixed"}
    )
    assert status == 200, answer
    await delivered(client, tag, records)
    await until(lambda: bridge.committed(topic).get(0), lambda c: c == 10, "committed to 10")
    assert blocked_rows(bridge) == []
    assert bridge.per_partition("restate_bridge_partition_blocked", topic) == {0: 0.0}
    assert bridge.value("restate_bridge_releases_total", action="retry") == 2
    releases = bridge.status_json()["controls"]["releases"]
    assert [(r["action"], r["offset"], r["reason"]) for r in releases] == [
        ("retry", 3, "fixed"),
        ("retry", 3, None),
    ]
    status, answer = bridge.post(f"/admin/partitions/{topic}/0/release", {"action": "retry"})
    assert (status, answer["detail"]) == (409, f"partition {topic}-0 is not blocked")


async def test_skip_to_a_topic_or_to_the_log_releases_and_commits_past_the_record(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, parking, tag = unique("skip"), unique("parking"), unique("k")
    await create_topics(bootstrap, [topic], partitions=2)
    await create_topics(bootstrap, [parking])
    refuse_offsets(proxy, {(0, 2): -1, (1, 1): -1})
    records = [keyed(n, keys=2, partition=n % 2, trace=f"t{n}") for n in range(12)]
    await produce(bootstrap, topic, records)
    bridge = bridges.start(
        recorder(topic, key=f"{tag}-{{key}}"), group_id=unique("g"), ingress_url=proxy.url
    )
    await until(lambda: len(blocked_rows(bridge)), lambda n: n == 2, "both partitions blocked")
    release = f"/admin/partitions/{topic}/0/release"

    # refused, and the partition stays blocked
    missing = unique("missing")
    status, answer = bridge.post(release, {"action": "skip", "reason": "r", "topic": missing})
    assert status == 422, answer
    assert f"topic {missing!r} does not exist" in answer["detail"]
    status, answer = bridge.post(release, {"action": "skip", "reason": "r", "topic": topic})
    assert (status, answer["status"]) == (400, "error")
    assert "read by route rec" in answer["detail"]
    assert bridge.post(release, {"action": "skip", "topic": parking})[0] == 400
    assert len(blocked_rows(bridge)) == 2

    reason = "poison order, refunded by hand (ticket 42)"
    status, answer = bridge.post(release, {"action": "skip", "reason": reason, "topic": parking})
    assert status == 200, answer
    assert (answer["offset"], answer["to"], answer["still_blocked"]) == (2, parking, False)
    [parked] = await read_topic(bootstrap, parking, 1)
    original = records[4]  # partition 0, offset 2
    assert (parked.key, parked.value) == (original.key, original.value)
    headers = dict(parked.headers)
    assert headers["trace"] == b"t4"
    assert headers["bridge.skip_reason"] == reason.encode()
    assert b"400" in headers["bridge.error"]
    assert headers["bridge.route"] == b"rec"
    assert headers["bridge.topic"] == topic.encode()
    assert (headers["bridge.partition"], headers["bridge.offset"]) == (b"0", b"2")

    status, answer = bridge.post(
        f"/admin/partitions/{topic}/1/release", {"action": "skip", "reason": "known bad"}
    )
    assert status == 200, answer
    line = f"{topic}-1@1: record skipped by the operator: route rec: known bad"
    await until(bridge.log, lambda log: line in log, "the skip logged")

    await until(lambda: bridge.committed(topic), lambda c: c == {0: 6, 1: 6}, "committed past both")
    kept = [r for n, r in enumerate(records) if n not in (4, 3)]  # p0@2 is n=4, p1@1 is n=3
    await delivered(client, tag, kept)
    assert bridge.value("restate_bridge_releases_total", action="skip") == 2
    assert bridge.value("restate_bridge_messages_total", outcome="skipped") == 2
    assert blocked_rows(bridge) == []
    [logged, to_topic] = bridge.status_json()["controls"]["releases"]
    assert (logged["partition"], logged["to"], logged["reason"]) == (1, None, "known bad")
    assert (to_topic["partition"], to_topic["to"]) == (0, parking)


async def test_a_blocked_partition_revoked_and_given_back_is_released_by_fetching_again(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, other, tag, group = unique("gone"), unique("other"), unique("g"), unique("g")
    await create_topics(bootstrap, [topic], partitions=2)
    await create_topics(bootstrap, [other])
    refuse_offsets(proxy, {(0, 1): -1, (1, 1): -1})
    records = [keyed(n, keys=2, partition=n % 2) for n in range(8)]
    await produce(bootstrap, topic, records)
    bridge = bridges.start(
        recorder(topic, key=f"{tag}-{{key}}"), group_id=group, ingress_url=proxy.url
    )
    await until(lambda: len(blocked_rows(bridge)), lambda n: n == 2, "both partitions blocked")

    # a replica reading another topic joins the group: every partition is revoked and this
    # one's come back to it; the blocked jobs are gone, the partitions stay blocked and paused
    joined = bridges.start(recorder(other, name="other"), group_id=group, name="joined")
    await until(
        bridge.log,
        lambda log: len(re.findall(rf"partition {re.escape(topic)}-\d stays blocked", log)) == 2,
        "given back, still blocked",
    )
    assert [r["owned"] for r in blocked_rows(bridge)] == [True, True]
    assert bridge.committed(topic) == {0: 1, 1: 1}
    proxy.refuse_matching = None  # the cause is fixed

    status, answer = bridge.post(f"/admin/partitions/{topic}/0/release", {"action": "retry"})
    assert status == 200, answer
    assert answer["refetch"] is True
    status, answer = bridge.post(
        f"/admin/partitions/{topic}/1/release", {"action": "skip", "reason": "gone bad"}
    )
    assert (status, answer["refetch"]) == (200, True), answer
    line = f"{topic}-1@1: record skipped by the operator: route rec: gone bad"
    await until(bridge.log, lambda log: line in log, "the re-fetched record skipped, logged")
    await until(lambda: bridge.committed(topic), lambda c: c == {0: 4, 1: 4}, "committed to end")
    await delivered(client, tag, [r for n, r in enumerate(records) if n != 3])
    assert blocked_rows(bridge) == []
    assert bridge.status_json()["controls"]["pending_skips"] == []
    assert joined.terminate() == 0
