"""bridge.schemas: the wire frame and each format's JSON mapping (docs/schema-registry.md)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import fastavro
import pytest

from bridge.schemas.avro import AvroCodec
from bridge.schemas.codec import BadSchema, PayloadError
from bridge.schemas.framing import (
    FrameError,
    encode_indexes,
    frame,
    parse_frame,
    read_indexes,
)
from bridge.schemas.json_schema import JsonSchemaCodec
from bridge.schemas.protobuf import compile_protobuf

# -- framing ----------------------------------------------------------------------------------


def test_a_frame_is_magic_byte_id_and_payload() -> None:
    framed = frame(0x01020304, b"xyz")
    assert framed == b"\x00\x01\x02\x03\x04xyz"
    parsed = parse_frame(framed)
    assert (parsed.schema_id, bytes(parsed.payload)) == (0x01020304, b"xyz")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "0 bytes are too short"),
        (b"\x00\x00\x01", "3 bytes are too short"),
        (b'{"a": 1}', "no magic byte: the first byte is 0x7b"),
        (b"\x01\x00\x00\x00\x01x", "no magic byte: the first byte is 0x01"),
    ],
)
def test_unframed_bytes_say_why(data: bytes, problem: str) -> None:
    with pytest.raises(FrameError, match=problem):
        parse_frame(data)


@pytest.mark.parametrize(
    ("indexes", "wire"),
    [
        ([0], b"\x00"),  # Confluent's shortcut for the first message
        ([1], b"\x02\x02"),  # count 1, index 1, both zig-zag
        ([0, 1], b"\x04\x00\x02"),
        ([2, 0, 3], b"\x06\x04\x00\x06"),
        ([70], b"\x02\x8c\x01"),  # a two-byte varint
    ],
)
def test_message_indexes_as_confluent_writes_them(indexes: list[int], wire: bytes) -> None:
    assert encode_indexes(indexes) == wire
    read, rest = read_indexes(memoryview(wire + b"MSG"))
    assert (read, bytes(rest)) == (indexes, b"MSG")


@pytest.mark.parametrize(
    "wire", [b"", b"\x02", b"\x04\x02", b"\x02\xff", b"\x01\x00", b"\xff" * 11]
)
def test_cut_or_corrupt_message_indexes_are_refused(wire: bytes) -> None:
    with pytest.raises(FrameError):
        read_indexes(memoryview(wire))


# -- Avro -------------------------------------------------------------------------------------

AVRO_SCHEMA = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "qty", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["NEW", "OLD"]}},
        {"name": "raw", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "F2", "size": 2}},
        {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "tags", "type": {"type": "map", "values": "double"}},
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [{"name": "sku", "type": "string"}],
                },
            },
        },
        {"name": "either", "type": ["null", "Line", "int"]},
    ],
}
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def avro_bytes(schema: dict[str, object], datum: dict[str, object]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return out.getvalue()


def order(**changes: object) -> dict[str, object]:
    datum: dict[str, object] = {
        "id": "o-1",
        "qty": 2**40,
        "note": "hi",
        "kind": "OLD",
        "raw": b"\x00\xff",
        "fx": b"ab",
        "price": Decimal("12.30"),
        "at": datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
        "at_us": datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        "local": datetime(2024, 1, 2, 3, 4, 5),
        "day": date(2024, 1, 2),
        "clock": time(3, 4, 5, 6000),
        "uid": UID,
        "tags": {"a": 1.5, "n": float("nan"), "i": float("-inf")},
        "lines": [{"sku": "x"}],
        "either": {"sku": "y"},
    }
    datum.update(changes)
    return datum


def test_avro_becomes_plain_json() -> None:
    codec = AvroCodec(json.dumps(AVRO_SCHEMA), [])
    data = codec.decode(memoryview(avro_bytes(AVRO_SCHEMA, order())))
    assert data == {
        "id": "o-1",
        "qty": 2**40,
        "note": "hi",  # a union unwrapped, not {"string": "hi"}
        "kind": "OLD",
        "raw": "AP8=",
        "fx": "YWI=",
        "price": "12.30",
        "at": "2024-01-02T03:04:05.123000Z",
        "at_us": "2024-01-02T03:04:05.123456Z",
        "local": "2024-01-02T03:04:05",
        "day": "2024-01-02",
        "clock": "03:04:05.006000",
        "uid": str(UID),
        "tags": {"a": 1.5, "n": "NaN", "i": "-Infinity"},
        "lines": [{"sku": "x"}],
        "either": {"sku": "y"},  # a named type in a union: its value, the name is not kept
    }
    assert (
        codec.decode(memoryview(avro_bytes(AVRO_SCHEMA, order(note=None, either=7))))["note"]
        is None
    )


def test_avro_named_types_from_references() -> None:
    line = {
        "type": "record",
        "name": "Line",
        "namespace": "shop",
        "fields": [{"name": "sku", "type": "string"}],
    }
    schema = {
        "type": "record",
        "name": "Cart",
        "namespace": "shop",
        "fields": [{"name": "first", "type": "shop.Line"}],
    }
    full = {**schema, "fields": [{"name": "first", "type": line}]}
    codec = AvroCodec(json.dumps(schema), [json.dumps(line)])
    assert codec.decode(memoryview(avro_bytes(full, {"first": {"sku": "s"}}))) == {
        "first": {"sku": "s"}
    }


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "EOFError"),
        (b"\x06o-1", "EOFError|IndexError|ValueError"),
        (avro_bytes({"type": "string"}, "x") + b"\x00", "1 bytes are left over"),
    ],
)
def test_an_avro_payload_that_does_not_match_is_refused(payload: bytes, problem: str) -> None:
    codec = AvroCodec(
        json.dumps({"type": "string"}) if b"x" in payload else json.dumps(AVRO_SCHEMA), []
    )
    with pytest.raises(PayloadError, match=problem):
        codec.decode(memoryview(payload))


def test_an_unusable_avro_schema_is_bad_schema() -> None:
    with pytest.raises(BadSchema, match="not a usable Avro schema"):
        AvroCodec('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}', [])


# -- Protobuf ---------------------------------------------------------------------------------

PROTO = """
syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/wrappers.proto";

message Order {
  string order_id = 1;
  int64 total_cents = 2;
  Status status = 3;
  google.protobuf.Timestamp placed_at = 4;
  google.protobuf.Duration ttl = 5;
  google.protobuf.Struct extra = 6;
  google.protobuf.StringValue coupon = 7;
  bytes blob = 8;
  message Line { string sku = 1; uint32 qty = 2; message Tag { string name = 1; } }
  repeated Line lines = 9;
  enum Status { NEW = 0; PAID = 1; }
}
message Refund { string order_id = 1; sint64 amount = 2; }
"""


async def proto_codec(text: str = PROTO, imports: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return await compile_protobuf(text, imports or {}, 7)


async def test_protobuf_becomes_canonical_proto3_json() -> None:
    codec = await proto_codec()
    cls = codec.message_class([0])
    msg = cls(order_id="o-1", total_cents=2**40, status=1, blob=b"\x00\xff")
    msg.placed_at.FromDatetime(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    msg.ttl.FromSeconds(90)
    msg.extra.update({"a": "b"})
    msg.coupon.value = "SAVE"
    msg.lines.add(sku="x", qty=2)
    data = codec.decode(memoryview(encode_indexes([0]) + msg.SerializeToString()))
    assert data == {
        "orderId": "o-1",  # lowerCamelCase (json_name)
        "totalCents": str(2**40),  # 64-bit integers as strings
        "status": "PAID",  # enums by name
        "placedAt": "2024-01-02T03:04:05Z",
        "ttl": "90s",
        "extra": {"a": "b"},
        "coupon": "SAVE",  # a wrapper is its value
        "blob": "AP8=",
        "lines": [{"sku": "x", "qty": 2}],
    }
    empty = codec.decode(memoryview(b"\x00"))  # fields without presence keep their defaults
    assert empty == {"orderId": "", "totalCents": "0", "status": "NEW", "blob": "", "lines": []}


async def test_protobuf_message_indexes_pick_nested_and_later_messages() -> None:
    codec = await proto_codec()
    refund = codec.message_class([1])(order_id="o-2", amount=-5)
    assert codec.decode(memoryview(encode_indexes([1]) + refund.SerializeToString())) == {
        "orderId": "o-2",
        "amount": "-5",
    }
    line = codec.message_class([0, 0])(sku="s", qty=3)
    assert codec.decode(memoryview(encode_indexes([0, 0]) + line.SerializeToString())) == {
        "sku": "s",
        "qty": 3,
    }
    tag = codec.message_class([0, 0, 0])(name="t")
    assert codec.decode(memoryview(encode_indexes([0, 0, 0]) + tag.SerializeToString())) == {
        "name": "t"
    }
    with pytest.raises(PayloadError, match="message index 2 but the schema has 2 top-level"):
        codec.decode(memoryview(encode_indexes([2]) + b""))
    with pytest.raises(PayloadError, match="has no nested message 1"):
        codec.decode(memoryview(encode_indexes([0, 1])))


async def test_protobuf_imports_from_references() -> None:
    common = 'syntax = "proto3";\npackage common;\nmessage Money { string currency = 1; }\n'
    main = 'syntax = "proto3";\nimport "common/money.proto";\nmessage Pay { common.Money m = 1; }\n'
    codec = await proto_codec(main, {"common/money.proto": common})
    msg = codec.message_class([0])()
    msg.m.currency = "EUR"
    assert codec.decode(memoryview(b"\x00" + msg.SerializeToString())) == {"m": {"currency": "EUR"}}


async def test_a_bad_protobuf_payload_or_schema_is_refused() -> None:
    codec = await proto_codec()
    with pytest.raises(PayloadError, match=r"not a valid shop\.Order"):
        codec.decode(memoryview(b"\x00\xff\xff\xff"))
    with pytest.raises(BadSchema, match=r"does not compile: .*Nope"):
        await proto_codec('syntax = "proto3";\nmessage A { Nope x = 1; }\n')
    with pytest.raises(BadSchema, match=r"not a relative \.proto path"):
        await proto_codec(PROTO, {"../evil.proto": ""})


# -- JSON Schema ------------------------------------------------------------------------------

SCHEMA = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})


def test_json_schema_payloads_are_their_json_exactly() -> None:
    codec = JsonSchemaCodec(SCHEMA, validate=False)
    assert codec.decode(memoryview(b'{"n": 123456789012345678901234567890}')) == {
        "n": 123456789012345678901234567890
    }
    assert codec.decode(memoryview(b'{"m": "no n, not validated"}')) == {"m": "no n, not validated"}
    with pytest.raises(PayloadError, match="is not JSON"):
        codec.decode(memoryview(b"{nope"))


def test_json_schema_validation_when_asked() -> None:
    codec = JsonSchemaCodec(SCHEMA, validate=True)
    assert codec.decode(memoryview(b'{"n": 1}')) == {"n": 1}
    with pytest.raises(PayloadError, match=r"at n: 'x' is not of type 'integer'"):
        codec.decode(memoryview(b'{"n": "x"}'))
    with pytest.raises(PayloadError, match=r"at \(root\): 'n' is a required property"):
        codec.decode(memoryview(b"{}"))
    with pytest.raises(BadSchema, match="not a valid JSON Schema"):
        JsonSchemaCodec('{"type": 5}', validate=True)
