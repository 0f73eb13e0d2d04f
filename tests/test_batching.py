"""bridge.core.batching: item encoding, the buffers' closing rules, batch idempotency keys; and the
``batch`` route option."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.config import BatchConfig, ConfigError, parse_config
from bridge.core.batching import (
    Accumulator,
    Batch,
    batch_body,
    batch_idempotency_key,
    encode_item,
)
from bridge.core.record import Decoded, Record, RecordView
from bridge.core.routing import Invocation, Poison, Router

CFG = BatchConfig(max_records=3, max_bytes=1024, max_wait=timedelta(milliseconds=50))


def item(record: Record, value_format: str = "json") -> dict[str, object]:
    encoded = encode_item(RecordView(record, value_format))  # type: ignore[arg-type]
    doc: dict[str, object] = json.loads(encoded)
    return doc


# -- items ------------------------------------------------------------------------------------


def test_an_item_carries_the_record_with_its_json_value_as_written() -> None:
    rec = Record(
        "t", 2, 7, 1700, b"k1", b'{"big": 123456789012345678901234567890, "s": "\xc3\xa9"}'
    )
    encoded = encode_item(RecordView(rec))
    assert b"123456789012345678901234567890" in encoded  # exact, not a float
    assert json.loads(encoded) == {
        "topic": "t",
        "partition": 2,
        "offset": 7,
        "timestamp": 1700,
        "key": "k1",
        "headers": {},
        "value": {"big": 123456789012345678901234567890, "s": "é"},
    }


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b'{"a": NaN}', b"1 2", b""])
def test_a_value_that_is_not_json_is_base64_with_a_flag(raw: bytes) -> None:
    doc = item(Record("t", 0, 0, 0, None, raw))
    assert doc["value_base64"] is True
    assert base64.b64decode(str(doc["value"])) == raw
    assert doc["key"] is None


def test_a_tombstone_is_a_null_value_without_a_flag() -> None:
    doc = item(Record("t", 0, 0, 0, b"k", None))
    assert doc["value"] is None
    assert "value_base64" not in doc


def test_non_utf8_keys_and_headers_are_base64_with_flags() -> None:
    rec = Record(
        "t",
        0,
        1,
        0,
        b"\x00\xff",
        b"1",
        (("text", b"plain"), ("bin", b"\xff\x01"), ("nul", None), ("rep", b"\xff"), ("rep", b"b")),  # type: ignore[arg-type]
    )
    doc = item(rec)
    assert doc["key_base64"] is True
    assert base64.b64decode(str(doc["key"])) == b"\x00\xff"
    assert doc["headers"] == {"text": "plain", "bin": "/wE=", "nul": None, "rep": "b"}
    assert doc["headers_base64"] == ["bin"]  # the last "rep" is text again
    assert doc["value"] == 1


def test_a_utf8_key_is_text_and_no_flags_appear() -> None:
    doc = item(Record("t", 0, 0, 0, "ünï".encode(), b"[]", (("h", "é".encode()),)))
    assert doc["key"] == "ünï"
    assert doc["headers"] == {"h": "é"}
    assert not {"key_base64", "headers_base64", "value_base64"} & set(doc)


def test_a_framed_value_is_its_decoded_data() -> None:
    rec = Record(
        "t", 0, 0, 0, None, b"\x00\x00\x00\x00\x01xx", value_data=Decoded("AVRO", 1, {"a": 1})
    )
    assert item(rec, "avro")["value"] == {"a": 1}


# -- buffers ----------------------------------------------------------------------------------


def add(
    acc: Accumulator[int], group: str, offset: int, size: int = 10, now: float = 0.0
) -> list[list[int]]:
    closed = acc.add(group, "r", CFG, "t", 0, offset, size, offset, now)
    return [b.tickets for b in closed]


def test_a_batch_closes_at_max_records() -> None:
    acc: Accumulator[int] = Accumulator()
    assert add(acc, "a", 1) == []
    assert add(acc, "a", 2) == []
    assert add(acc, "a", 3) == [[1, 2, 3]]
    assert len(acc) == 0


def test_groups_are_kept_apart_in_offset_order() -> None:
    acc: Accumulator[int] = Accumulator()
    for offset, group in enumerate("abab"):
        assert add(acc, group, offset) == []
    assert add(acc, "b", 9) == [[1, 3, 9]]
    assert [b.tickets for b in acc.take()] == [[0, 2]]


def test_a_batch_closes_before_an_item_that_would_pass_max_bytes() -> None:
    acc: Accumulator[int] = Accumulator()
    assert add(acc, "a", 1, size=500) == []
    # 2 + 500 + 1 + 521 = 1024: fits exactly, and then the batch is full
    assert add(acc, "a", 2, size=521) == [[1, 2]]
    assert add(acc, "a", 3, size=600) == []
    assert add(acc, "a", 4, size=600) == [[3]]
    assert add(acc, "a", 5, size=5000) == [[4], [5]]  # too big for any batch: it goes alone


def test_the_size_counted_is_the_body_sent() -> None:
    acc: Accumulator[int] = Accumulator()
    items = [b'{"a":1}', b'{"bb":22}']
    for i, raw in enumerate(items):
        acc.add("g", "r", CFG, "t", 0, i, len(raw), i, 0.0)
    (batch,) = acc.take()
    assert batch.size == len(batch_body(items))


def test_a_batch_closes_max_wait_after_its_first_item() -> None:
    acc: Accumulator[int] = Accumulator()
    add(acc, "a", 1, now=10.0)
    add(acc, "b", 2, now=10.02)
    add(acc, "a", 3, now=10.04)
    assert acc.next_deadline() == pytest.approx(10.05)
    assert acc.due(10.049) == []
    assert [b.tickets for b in acc.due(10.05)] == [[1, 3]]
    assert [b.tickets for b in acc.due(10.08)] == [[2]]
    assert acc.next_deadline() is None


def test_take_selects() -> None:
    acc: Accumulator[int] = Accumulator()
    add(acc, "a", 1)
    add(acc, "b", 2)
    assert [b.tickets for b in acc.take(lambda b: b.group == "b")] == [[2]]
    assert "a" in acc
    assert "b" not in acc


# -- idempotency keys -------------------------------------------------------------------------


def test_the_idempotency_key_names_the_records_coordinates() -> None:
    assert batch_idempotency_key("ledger", "orders", 3, 10, 42) == "orders-3-10-42:ledger"
    acc: Accumulator[int] = Accumulator()
    for offset in (5, 6, 7):
        closed = acc.add("g", "rt", CFG, "top", 1, offset, 1, offset, 0.0)
    assert closed[0].idempotency_key() == "top-1-5-7:rt"  # every offset of its range


def test_a_batch_of_some_offsets_of_its_range_names_them() -> None:
    """Another batch over the same range (a reload changed ``match``) must not share its key:
    Restate would answer it as a duplicate and records never sent would be committed."""
    keys = set()
    ten = BatchConfig(max_records=10, max_bytes=1024, max_wait=timedelta(seconds=1))
    for offsets in ((5, 6, 9), (5, 9), (5, 7, 9), (5, 6, 7, 8, 9)):
        acc: Accumulator[int] = Accumulator()
        closed: list[Batch[int]] = []
        for offset in offsets:
            closed = acc.add("g", "rt", ten, "top", 1, offset, 1, offset, 0.0) or closed
        (batch,) = closed or acc.take()
        key = batch.idempotency_key()
        assert key.startswith("top-1-5-9")
        assert key.endswith(":rt")
        keys.add(key)
    assert len(keys) == 4
    assert "top-1-5-9:rt" in keys  # the whole range keeps the plain form
    again: Accumulator[int] = Accumulator()
    for offset in (5, 6, 9):
        again.add("g", "rt", ten, "top", 1, offset, 1, offset, 0.0)
    assert again.take()[0].idempotency_key() in keys  # the same records, the same key


@pytest.mark.parametrize("route", ["ünï route", "x" * 2000, "tab\there"])
def test_an_unprintable_or_long_route_name_is_hashed(route: str) -> None:
    idem = batch_idempotency_key(route, "orders", 0, 1, 2)
    assert idem.startswith("orders-0-1-2:sha256-")
    assert idem.isascii()
    assert idem.isprintable()
    assert len(idem) < 100
    assert idem != batch_idempotency_key(route + "!", "orders", 0, 1, 2)


# -- the route option -------------------------------------------------------------------------

HEAD = """
[kafka]
bootstrap_servers = "localhost:9092"
[dead_letter]
topic = "dlq"
[[routes]]
topic = "orders"
service = "Ledger"
handler = "apply"
"""


def parse(route_lines: str) -> list[str] | object:
    try:
        return parse_config(HEAD + route_lines, Path("routes.toml"), {})
    except ConfigError as exc:
        return exc.problems


def test_batch_defaults_and_values() -> None:
    cfg = parse('target = "object"\nkey = "{key}"\nbatch = {}\n')
    assert not isinstance(cfg, list)
    assert cfg.routes[0].batch == BatchConfig()  # type: ignore[attr-defined]
    assert cfg.routes[0].idempotency_key is None  # type: ignore[attr-defined]
    cfg = parse(
        'target = "service"\nidempotency_key = "none"\n'
        'batch = { max_records = 10000, max_bytes = "512KiB", max_wait = "0ms" }\n'
    )
    assert cfg.routes[0].batch == BatchConfig(  # type: ignore[attr-defined]
        10000, 512 * 1024, timedelta(0), idempotent=False
    )


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ('target = "workflow"\nkey = "{key}"\nbatch = {}', "batch is for service and object"),
        ('target = "service"\nreply_topic = "r"\nbatch = {}', "no replies"),
        ('target = "service"\nidempotency_key = "{offset}"\nbatch = {}', "coordinates"),
        ('target = "service"\nheaders = ["h"]\nbatch = {}', "each item carries all"),
        ('target = "service"\nbody = "{value.a}"\nbatch = {}', "remove body"),
        ('target = "service"\ncontent_type = "text/plain"\nbatch = {}', "application/json"),
        ('target = "service"\ndelay = "{header.d}"\nbatch = {}', "one delay"),
        ('target = "service"\nbatch = 5', "inline table"),
        ('target = "service"\nbatch = { max_records = 0 }', "from 1 to 10000"),
        ('target = "service"\nbatch = { max_records = 10001 }', "from 1 to 10000"),
        ('target = "service"\nbatch = { max_bytes = "65MiB" }', "1KiB to 64MiB"),
        ('target = "service"\nbatch = { max_bytes = "100B" }', "1KiB to 64MiB"),
        ('target = "service"\nbatch = { max_bytes = "1 GB!" }', "not a size"),
        ('target = "service"\nbatch = { max_wait = "11s" }', "too long"),
        ('target = "service"\nbatch = { max_wait = "soon" }', "max_wait"),
        ('target = "service"\nbatch = { max_record = 5 }', "unknown key 'max_record'"),
    ],
)
def test_bad_batch_options_are_refused_with_a_reason(lines: str, says: str) -> None:
    problems = parse(lines + "\n")
    assert isinstance(problems, list), problems
    assert any(says in p for p in problems), problems
    assert all(p.startswith("routes.toml:") for p in problems)


def test_a_batch_route_plans_items_and_a_poison_alone() -> None:
    cfg = parse('target = "object"\nkey = "{value.id}"\nbatch = { max_records = 2 }\n')
    assert not isinstance(cfg, list)
    router = Router(cfg)  # type: ignore[arg-type]
    (good,) = router.plan(Record("orders", 0, 4, 9, b"k", b'{"id": "a"}'))
    assert isinstance(good, Invocation)
    assert good.key == "a"
    assert good.batch == BatchConfig(max_records=2)
    assert good.idempotency_key is None  # the dispatcher names the batch
    assert good.body is not None
    assert json.loads(good.body)["offset"] == 4
    (bad,) = router.plan(Record("orders", 0, 5, 9, b"k", b"not json"))
    assert isinstance(bad, Poison)
