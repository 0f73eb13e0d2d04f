"""Framed records end to end: a real schema registry (Apicurio, Confluent API), records framed as a
Confluent serializer frames them, the bridge decoding them into the JSON the handler receives."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest

from bridge.ingress import Client
from bridge.schemas.framing import frame
from bridge.schemas.protobuf import compile_protobuf
from tests.helpers import hold_for, recorded, recorded_as, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.registry import ApicurioRegistry

pytestmark = pytest.mark.integration

ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string"},
        {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
ORDER_V2 = {
    **ORDER_V1,
    "fields": [
        *ORDER_V1["fields"],  # type: ignore[list-item]
        {
            "name": "kind",
            "type": {"type": "enum", "name": "Kind", "symbols": ["NEW", "RETURN"]},
            "default": "NEW",
        },
    ],
}
CUSTOMER_KEY = {
    "type": "record",
    "name": "CustomerKey",
    "fields": [{"name": "tenant", "type": "string"}, {"name": "id", "type": "long"}],
}
AT = datetime(2024, 5, 6, 7, 8, 9, 250000, tzinfo=UTC)


def avro(schema: dict[str, Any], datum: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return out.getvalue()


def registry_table(registry: ApicurioRegistry, extra: str = "") -> str:
    return f'[schema_registry]\nurl = "{registry.url}"\n{extra}\n'


async def test_avro_values_of_two_schema_versions_and_avro_keys(
    broker: Broker, bridges: BridgeFactory, client: Client, schema_registry: ApicurioRegistry
) -> None:
    topic, tag = unique("avro"), unique("cust")
    await create_topics(broker.bootstrap_servers, [topic])
    v1 = schema_registry.register(f"{topic}-value", json.dumps(ORDER_V1))
    v2 = schema_registry.register(f"{topic}-value", json.dumps(ORDER_V2))
    key_id = schema_registry.register(f"{topic}-key", json.dumps(CUSTOMER_KEY))
    assert len({v1, v2, key_id}) == 3
    key = frame(key_id, avro(CUSTOMER_KEY, {"tenant": tag, "id": 7}))
    old = {"id": "o-1", "price": Decimal("12.30"), "at": AT, "note": None}
    new = {"id": "o-2", "price": Decimal("0.05"), "at": AT, "note": "gift", "kind": "RETURN"}
    await produce(
        broker.bootstrap_servers,
        topic,
        [
            Message(key, frame(v1, avro(ORDER_V1, old))),
            Message(key, frame(v2, avro(ORDER_V2, new))),
        ],
    )
    routes = registry_table(schema_registry) + recorder(
        topic, key="{key.tenant}-{key.id}", value_format="avro", key_format="avro"
    )
    bridges.start(routes, group_id=unique("g"))
    at = "2024-05-06T07:08:09.250000Z"
    await recorded_as(
        client,
        f"{tag}-7",
        [
            {"id": "o-1", "price": "12.30", "at": at, "note": None},  # written with v1, read as v1
            {"id": "o-2", "price": "0.05", "at": at, "note": "gift", "kind": "RETURN"},
        ],
    )


PROTO = """syntax = "proto3";
package shop.v1;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";

message Envelope { string note = 1; }
message Payment {
  string payment_id = 1;
  int64 amount_minor = 2;
  State state = 3;
  google.protobuf.Timestamp paid_at = 4;
  google.protobuf.StringValue coupon = 5;
  google.protobuf.Struct meta = 6;
  enum State { PENDING = 0; SETTLED = 1; }
  message Refund { string payment_id = 1; int64 amount_minor = 2; }
}
"""


async def test_protobuf_later_and_nested_messages_and_well_known_types(
    broker: Broker, bridges: BridgeFactory, client: Client, schema_registry: ApicurioRegistry
) -> None:
    topic, tag = unique("proto"), unique("pay")
    await create_topics(broker.bootstrap_servers, [topic])
    schema_id = schema_registry.register(f"{topic}-value", PROTO, "PROTOBUF")
    codec = await compile_protobuf(PROTO, {}, schema_id)  # the producer's generated classes
    payment = codec.message_class([1])(payment_id="p-1", amount_minor=2**40, state=1)
    payment.paid_at.FromDatetime(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    payment.coupon.value = "SPRING"
    payment.meta.update({"channel": "web"})
    refund = codec.message_class([1, 0])(payment_id="p-1", amount_minor=-300)
    envelope = codec.message_class([0])(note="first message, index [0]")
    messages = [
        Message(b"k", frame(schema_id, payment.SerializeToString(), [1])),
        Message(b"k", frame(schema_id, refund.SerializeToString(), [1, 0])),
        Message(b"k", frame(schema_id, envelope.SerializeToString(), [0])),
    ]
    await produce(broker.bootstrap_servers, topic, messages)
    routes = registry_table(schema_registry) + recorder(topic, key=tag, value_format="protobuf")
    bridges.start(routes, group_id=unique("g"))
    await recorded_as(
        client,
        tag,
        [
            {
                "paymentId": "p-1",
                "amountMinor": str(2**40),
                "state": "SETTLED",
                "paidAt": "2024-01-02T03:04:05Z",
                "coupon": "SPRING",
                "meta": {"channel": "web"},
            },
            {"paymentId": "p-1", "amountMinor": "-300"},
            {"note": "first message, index [0]"},
        ],
    )


async def test_json_schema_values_validated_and_undecodable_records_dead_lettered(
    broker: Broker, bridges: BridgeFactory, client: Client, schema_registry: ApicurioRegistry
) -> None:
    topic, dlq, tag = unique("jsons"), unique("dlq"), unique("js")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    json_id = schema_registry.register(f"{topic}-value", json.dumps(schema), "JSON")
    avro_id = schema_registry.register(f"{topic}-other", json.dumps(ORDER_V1))
    messages = [
        Message(b"k0", frame(json_id, b'{"n": 123}')),
        Message(b"k1", b'{"n": 1}'),  # plain JSON: no magic byte
        Message(b"k2", frame(987654321, b'{"n": 2}')),  # an id the registry does not know
        Message(b"k3", frame(json_id, b'{"n": "three"}')),  # does not validate
        Message(b"k4", frame(avro_id, b"\x00")),  # an Avro schema where JSON Schema is expected
        Message(b"k5", frame(json_id, b'{"n": 5}')),
    ]
    await produce(broker.bootstrap_servers, topic, messages)
    routes = registry_table(schema_registry, "validate_json = true") + recorder(
        topic, key=tag, value_format="json_schema"
    )
    bridge = bridges.start(routes, group_id=unique("g"), dead_letter_topic=dlq)
    await recorded_as(client, tag, [{"n": 123}, {"n": 5}])
    dead = await read_topic(broker.bootstrap_servers, dlq, expect=4, timeout=60)
    reasons = {d.key: dict(d.headers)["bridge.error"].decode() for d in dead}  # type: ignore[attr-defined]
    assert reasons[b"k1"].startswith("value: no magic byte: the first byte is 0x7b")
    assert reasons[b"k2"] == "value: schema id 987654321 is not in the schema registry"
    assert reasons[b"k3"].startswith(
        f"value: does not match its json_schema schema (id {json_id}): does not validate "
        "against its JSON Schema at n: 'three' is not of type 'integer'"
    )
    assert reasons[b"k4"] == (
        f"value: written with a AVRO schema (id {avro_id}), but the route says "
        "value_format = 'json_schema'"
    )
    assert {d.value for d in dead} == {m.value for m in messages[1:5]}  # type: ignore[attr-defined]
    failures = {
        labels["reason"]: value
        for labels, value in bridge.samples("restate_bridge_decode_failures_total", topic=topic)
    }
    assert failures == {
        "no_magic_byte": 1,
        "unknown_schema": 1,
        "bad_payload": 1,
        "wrong_format": 1,
    }
    assert bridge.value("restate_bridge_schema_registry_requests_total", result="not_found") == 1
    assert bridge.value("restate_bridge_schema_cache_hits_total") >= 3


async def test_registry_outage_holds_records_until_it_is_back(
    broker: Broker,
    bridges: BridgeFactory,
    client: Client,
    own_schema_registry: ApicurioRegistry,
) -> None:
    registry = own_schema_registry
    topic, dlq, tag = unique("outage"), unique("dlq"), unique("out")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    schema = {"type": "record", "name": "N", "fields": [{"name": "n", "type": "int"}]}
    first = registry.register(f"{topic}-value", json.dumps(schema))
    routes = registry_table(registry, 'request_timeout = "2s"') + recorder(
        topic, key=tag, value_format="avro"
    )
    bridge = bridges.start(routes, group_id=unique("g"), dead_letter_topic=dlq)
    await produce(
        broker.bootstrap_servers, topic, [Message(b"k", frame(first, avro(schema, {"n": 1})))]
    )
    await recorded_as(client, tag, [{"n": 1}])

    evolved = {**schema, "fields": [*schema["fields"], {"name": "m", "type": "int", "default": 0}]}
    second = registry.register(f"{topic}-value", json.dumps(evolved))  # not yet fetched
    registry.stop()
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(b"k", frame(second, avro(evolved, {"n": 2, "m": 3})))],
    )
    _, body = await until(
        bridge.readyz, lambda r: r[0] == 503, "not ready while the registry is down"
    )
    assert body["detail"].startswith(f"schema registry unreachable: schema id {second}: ")
    assert bridge.value("restate_bridge_schema_registry_up") == 0

    await until(recorded(client, tag), hold_for(3), "holding")
    assert await recorded(client, tag)() == [{"n": 1}]
    assert (
        bridge.value(
            "restate_bridge_messages_total", topic=topic, route="rec", outcome="dead_lettered"
        )
        == 0
    )
    assert bridge.value("restate_bridge_schema_registry_requests_total", result="error") >= 2

    registry.start()
    await recorded_as(client, tag, [{"n": 1}, {"n": 2, "m": 3}], timeout=60)
    await until(bridge.readyz, lambda r: r[0] == 200, "ready again")
    assert bridge.value("restate_bridge_schema_registry_up") == 1
    assert await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=2) == []


def test_route_command_shows_what_a_framed_record_becomes(
    tmp_path: Path, schema_registry: ApicurioRegistry
) -> None:
    topic = unique("cli")
    schema_id = schema_registry.register(f"{topic}-value", json.dumps(ORDER_V1))
    value = frame(schema_id, avro(ORDER_V1, {"id": "o-9", "price": Decimal("1.00"), "at": AT}))
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[kafka]\nbootstrap_servers = "127.0.0.1:9"\n'
        + registry_table(schema_registry)
        + recorder(topic, key="{value.id}", value_format="avro")
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "route",
            str(routes),
            "--topic",
            topic,
            "--value-hex",
            value.hex(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["key"] == "o-9"
    assert json.loads(shown["body"]) == {
        "id": "o-9",
        "price": "1.00",
        "at": "2024-05-06T07:08:09.250000Z",
        "note": None,
    }
    down = routes.read_text().replace(schema_registry.url, "http://127.0.0.1:9/apis/ccompat/v7")
    routes.write_text(down)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "route",
            str(routes),
            "--topic",
            topic,
            "--value-hex",
            value.hex(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1].startswith(
        f"schema registry unreachable: schema id {schema_id}: "
    )
