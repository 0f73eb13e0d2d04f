"""``run`` with ``[restate] admin_url``: a route whose service is not deployed yet waits (no dead
letter, however long past ``unknown_target_grace``) while the other routes flow; once the service
is deployed its records go, each once, in key order. On both brokers, against the real Restate."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bridge.ingress import Client
from tests.helpers import hold_for, recorded_as, recorder, route, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

pytestmark = pytest.mark.integration


async def test_a_route_to_a_service_deployed_later_waits_then_delivers_once_in_order(
    broker: Broker,
    bridges: BridgeFactory,
    restate: RestateServer,
    client: Client,
    tmp_path: Path,
) -> None:
    bootstrap = broker.bootstrap_servers
    service = f"Late{uuid.uuid4().hex[:8]}"
    late, other, dlq, group = unique("late"), unique("fit"), unique("late-dlq"), unique("g")
    await create_topics(bootstrap, [late], partitions=2)
    await create_topics(bootstrap, [other, dlq])
    keys = [unique("k") for _ in range(3)]
    bridge = bridges.start(
        route(
            name="late", topic=late, target="object", service=service, handler="take", key="{key}"
        )
        + recorder(other, name="fit"),
        group_id=group,
        dead_letter_topic=dlq,
        restate_extra=f'admin_url = "{restate.admin_url}"\nadmin_check_interval = "1s"\n',
        delivery='unknown_target_grace = "1s"',
        wait_ready=False,
    )
    status, body = await until(
        bridge.readyz, lambda r: "is not registered" in r[1].get("detail", ""), "readyz says why"
    )
    assert status == 503
    assert f"route 'late': service {service!r} is not registered" in body["detail"]
    assert bridge.metric('restate_bridge_route_unfit{route="late"}') == 1
    assert bridge.metric('restate_bridge_route_unfit{route="fit"}') == 0

    sent = [(keys[n % 3], n) for n in range(30)]
    await produce(bootstrap, late, [Message(k.encode(), f'{{"n": {n}}}'.encode()) for k, n in sent])
    fit_key = unique("fit")
    await produce(bootstrap, other, [Message(fit_key.encode(), b'"goes"')])
    await recorded_as(client, fit_key, ["goes"])  # the fitting route is not held back
    # well past the grace: nothing sent, nothing dead-lettered, nothing committed
    await until(lambda: bridge.committed(late), hold_for(4.0), "the late topic held for 4 s")
    assert bridge.committed(late) in ({}, {0: 0, 1: 0})
    assert await read_topic(bootstrap, dlq, expect=1, timeout=1) == []
    assert "not registered" in str(bridge.status_json()["restate_registry"]["unfit_routes"])

    deployment = HandlerServer(
        tmp_path / "late", "tests.stack.late_handlers:app", env={"LATE_SERVICE": service}
    )
    deployment.start()
    try:
        deployment.register_with(restate)
        for key in keys:
            expected = [{"n": n} for k, n in sent if k == key]
            await until(
                lambda key=key: client.object(service, key, "get").request(),
                lambda got, expected=expected: got == expected,
                f"{key}: every record once, in order",
            )
        await until(bridge.readyz, lambda r: r[0] == 200, "ready once the service is deployed")
        assert bridge.metric('restate_bridge_route_unfit{route="late"}') == 0
        assert bridge.status_json()["restate_registry"]["unfit_routes"] == {}
        assert await read_topic(bootstrap, dlq, expect=1, timeout=1) == []
        assert "does not fit Restate's registry" in bridge.log()
        assert "route 'late' fits Restate's registry now" in bridge.log()
    finally:
        deployment.stop()


async def test_validate_input_dead_letters_what_the_handlers_schema_refuses(
    broker: Broker, bridges: BridgeFactory, restate: RestateServer
) -> None:
    """``Greeter/greet`` publishes ``{"type": "string"}`` as its input schema."""
    bootstrap = broker.bootstrap_servers
    topic, dlq = unique("typed"), unique("typed-dlq")
    await create_topics(bootstrap, [topic, dlq])
    values = [b'"Ada"', b"42", b'{"name": "Ada"}', b'"Grace"']
    await produce(bootstrap, topic, [Message(b"k", v) for v in values])
    greets = route(name="greet", topic=topic, target="service", service="Greeter", handler="greet")
    bridge = bridges.start(
        greets + "validate_input = true\n",
        group_id=unique("g"),
        dead_letter_topic=dlq,
        restate_extra=f'admin_url = "{restate.admin_url}"\n',
    )
    letters = await read_topic(bootstrap, dlq, expect=2)
    assert [dict(d.headers)["bridge.error"].decode() for d in letters] == [
        "input refused by Greeter/greet's schema: $: 42 is not of type 'string'",
        "input refused by Greeter/greet's schema: $: {'name': 'Ada'} is not of type 'string'",
    ]
    await until(lambda: bridge.committed(topic), lambda c: c == {0: 4}, "all four committed")
    assert bridge.metric('restate_bridge_messages_total{outcome="accepted"') == 2
    assert bridge.metric("restate_bridge_inputs_refused_total") == 2
