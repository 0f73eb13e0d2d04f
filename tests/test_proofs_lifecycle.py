"""Proofs of the lifecycle: drain on revocation, a drain that times out, the second signal, and the
environment overrides the compose stack relies on.

Restate's idempotency deduplicates a redelivered record, which would hide a missing drain; the
revocation proof therefore sends with ``idempotency_key = "none"``, so that every redelivery shows
up as a second entry in a ``Recorder`` object. The counting proxy (tests/stack/proxy.py) holds sends
to keep records in flight at the moment that matters.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.ingress import Client
from tests.helpers import recorded, recorded_as, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess, routes_toml
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.ledger import (
    Ledger,
    assert_states,
    committed_offsets,
    outcome,
    produce_keyed,
    wait_committed,
)
from tests.stack.procs import free_port, port_open
from tests.stack.proxy import IngressProxy
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


async def test_revoked_partitions_are_drained_and_committed_before_a_joiner_takes_them(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    bootstrap, total = broker.bootstrap_servers, 3000
    topic, tag, group = unique("handover"), unique("k"), unique("g")
    await create_topics(bootstrap, [topic], partitions=4)
    keys = [f"{tag}-{i}" for i in range(40)]
    ledger = Ledger(topic)
    await produce_keyed(bootstrap, ledger, keys, 0, total)
    # no idempotency key: Restate cannot hide a redelivery, each one is a second entry
    routes = recorder(topic, idempotency_key="none")
    proxy.delay = 0.1  # about 40 sends in flight at any time: the first bridge stays busy
    # a fetch bound, so that the first bridge has not fetched everything when the joiner comes
    limit = "max_pending_records = 200"

    first = bridges.start(
        routes, group_id=group, name="first", ingress_url=proxy.url, delivery=limit
    )
    await until(lambda: outcome(first, topic, "accepted"), lambda n: n >= 200, "200 accepted")
    joiner = bridges.start(
        routes, group_id=group, name="joiner", ingress_url=proxy.url, delivery=limit
    )
    await until(
        lambda: outcome(joiner, topic, "accepted"), lambda n: n > 0, "the joiner delivering"
    )
    assert outcome(first, topic, "accepted") < total, "the first bridge was idle at the handover"
    await wait_committed(bootstrap, group, ledger, "after the handover")
    assert "partitions revoked" in first.log()

    # every record sent exactly once across the handover: no entry twice, none missing
    await assert_states(client, ledger.expected())
    sent = outcome(first, topic, "accepted") + outcome(joiner, topic, "accepted")
    assert sent == total, f"{sent} sends for {total} records"
    assert len(proxy.answered(202)) == total


@dataclass
class Stuck:
    bridge: BridgeProcess
    topic: str
    group: str
    keys: list[str]
    committed: int
    """Where the commit stands: the lowest held record (the 5 accepted need not be 0..4)."""


@pytest.fixture
def stuck(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy
) -> Callable[[str], Awaitable[Stuck]]:
    """Starts a bridge whose first 5 sends are accepted and whose next sends hang.

    20 records over 4 keys on one partition: one send per key is held, the commit stands at the
    lowest of them.
    """

    async def start(drain_timeout: str) -> Stuck:
        topic, group, tag = unique("stuck"), unique("g"), unique("k")
        keys = [f"{tag}-{i}" for i in range(4)]
        await create_topics(broker.bootstrap_servers, [topic])
        await produce(
            broker.bootstrap_servers,
            topic,
            [Message(keys[i % 4].encode(), str(i).encode()) for i in range(20)],
        )
        proxy.hold(after=5)
        bridge = bridges.start(
            recorder(topic),
            group_id=group,
            ingress_url=proxy.url,
            name="stuck",
            delivery=f'drain_timeout = "{drain_timeout}"',
        )
        held = await until(proxy.held, lambda h: len(h) == 4, "one send per key held")
        lowest = min(h.partition_offset[1] for h in held)
        await until(
            lambda: bridge.committed(topic),
            lambda c: c == {0: lowest},
            f"committed up to the first held record, {lowest}",
        )
        return Stuck(bridge, topic, group, keys, lowest)

    return start


async def test_a_drain_that_times_out_exits_in_time_and_commits_only_what_was_accepted(
    broker: Broker,
    bridges: BridgeFactory,
    proxy: IngressProxy,
    client: Client,
    stuck: Callable[[str], Awaitable[Stuck]],
) -> None:
    s = await stuck("1s")
    started = time.monotonic()
    code = await asyncio.to_thread(s.bridge.terminate, 15)
    elapsed = time.monotonic() - started
    assert code == 0, s.bridge.process.log_tail()
    assert elapsed < 1 + 4, f"took {elapsed:.1f}s with drain_timeout = 1s"
    log = s.bridge.log()
    assert "stopping: draining 15 unfinished records" in log, log[-2000:]
    assert "drain timed out" in log
    assert await committed_offsets(broker.bootstrap_servers, s.group, s.topic) == {0: s.committed}

    # the held sends never reached Restate; a restart delivers those 15, each once, in key order
    proxy.release()
    second = bridges.start(recorder(s.topic), group_id=s.group, name="second")
    await until(lambda: outcome(second, s.topic, "accepted"), lambda n: n == 15, "15 accepted")
    # accepted past the commit before the stop: read again, answered PreviouslyAccepted
    assert outcome(second, s.topic, "duplicate") == 5 - s.committed
    for i, key in enumerate(s.keys):
        await recorded_as(client, key, list(range(i, 20, 4)))  # accepted is not yet applied


async def test_a_second_sigterm_exits_at_once_with_code_1(
    broker: Broker, stuck: Callable[[str], Awaitable[Stuck]]
) -> None:
    s = await stuck("30s")
    s.bridge.signal(signal.SIGTERM)
    await until(s.bridge.log, lambda log: "stopping: draining" in log, "draining")
    started = time.monotonic()
    s.bridge.signal(signal.SIGTERM)
    code = await asyncio.to_thread(s.bridge.wait, 5)
    assert code == 1, f"exit code {code} {time.monotonic() - started:.1f}s after the 2nd signal"
    assert "received SIGTERM again: exiting without draining" in s.bridge.log()
    # forced out mid-drain: nothing past the accepted records was committed
    assert await committed_offsets(broker.bootstrap_servers, s.group, s.topic) == {0: s.committed}


async def test_environment_overrides_point_a_bridge_at_the_real_stack(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, client: Client
) -> None:
    topic, key, token = unique("env"), unique("k"), "s3cr3t-" + unique("tok")
    await create_topics(broker.bootstrap_servers, [topic])
    file_port, env_port = free_port(), free_port()
    bridge = bridges.process(
        "env",
        env={
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "RESTATE_URL": proxy.url,
            "BRIDGE_METRICS_LISTEN": f"127.0.0.1:{env_port}",
            "RESTATE_AUTH_TOKEN": token,
        },
        metrics_port=env_port,
    )
    # the file points nowhere: as in docker-compose.yml, only the environment is right
    bridge.write_routes(
        routes_toml(
            bootstrap="127.0.0.1:1",
            ingress_url="http://127.0.0.1:1",
            group_id=unique("g"),
            metrics_port=file_port,
            routes=recorder(topic),
        )
    )
    bridge.start()
    await produce(broker.bootstrap_servers, topic, [Message(key.encode(), b'"a"')])
    await until(recorded(client, key), lambda got: got == ["a"], "the record delivered")
    assert not port_open(file_port), "the file's metrics listen address was used"
    sends = proxy.snapshot()
    assert [s.headers.get("authorization") for s in sends] == [f"Bearer {token}"]
    assert token not in bridge.log()


async def test_a_sigterm_while_starting_exits_at_once(
    tmp_path: Path, restate: RestateServer
) -> None:
    """A broker that accepts connections and never answers holds the start; SIGTERM ends it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    bridge = BridgeProcess(tmp_path, "starting")
    try:
        bridge.write_routes(
            routes_toml(
                bootstrap=f"127.0.0.1:{silent.getsockname()[1]}",
                ingress_url=restate.ingress_url,
                group_id=unique("g"),
                metrics_port=bridge.metrics_port,
                routes=recorder(unique("t")),
            )
        )
        bridge.start(wait_ready=False)
        assert not bridge.ready()
        started = time.monotonic()
        bridge.signal(signal.SIGTERM)
        code = await asyncio.to_thread(bridge.wait, 10)
        elapsed = time.monotonic() - started
    finally:
        bridge.kill()
        silent.close()
    assert code == 0, bridge.log()[-2000:]
    assert elapsed < 3, f"took {elapsed:.1f}s to stop while starting"
    assert "stopped while starting" in bridge.log()
