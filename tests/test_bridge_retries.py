"""Retryable ingress answers (429 with Retry-After, 503) are retried, in order, without loss.

Restate does not shed load on demand, so the counting proxy (tests/stack/proxy.py) in front of the
real ingress answers the first sends with 429 or 503 and forwards the rest unchanged.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from bridge.ingress import Client
from tests.helpers import messages_total, recorded_as, recorder, unique
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.proxy import IngressProxy

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("status", "retry_after"), [(429, "1"), (503, None)])
async def test_retryable_answers_are_retried_in_order(
    broker: Broker,
    bridges: BridgeFactory,
    client: Client,
    proxy: IngressProxy,
    status: int,
    retry_after: str | None,
) -> None:
    topic, key = unique("shed"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic])
    proxy.refuse_status, proxy.retry_after = status, retry_after
    bridge = bridges.start(
        recorder(topic, name="shed"),
        group_id=unique("g"),
        ingress_url=proxy.url,
    )
    proxy.refuse = 3
    await produce(
        broker.bootstrap_servers, topic, [Message(key.encode(), str(i).encode()) for i in range(5)]
    )
    await recorded_as(client, key, [0, 1, 2, 3, 4])
    samples = bridge.metrics()
    reason = "http_429" if status == 429 else "http_5xx"
    errors = f'restate_bridge_ingress_errors_total{{reason="{reason}",route="shed"}}'
    assert samples[errors] == 3
    assert samples['restate_bridge_retries_total{route="shed"}'] == 3
    assert messages_total(samples, topic, "shed", "accepted") == 5
    sends = proxy.snapshot()
    assert [s.status for s in sends[:4]] == [status, status, status, 202]
    # the refused send was the first record, retried until accepted: nothing overtook it
    assert [s.partition_offset for s in sends[:4]] == [(0, 0)] * 4
    assert [s.partition_offset for s in sends[4:]] == [(0, n) for n in range(1, 5)]
    if retry_after is not None:
        # every retry after a 429 waited at least Retry-After (1 s), though backoff starts at 0.1 s
        gaps = [b.start - a.start for a, b in pairwise(sends[:4])]
        assert min(gaps) >= 0.95, gaps
