"""bridge.core.routing: from a record to its invocations (or poison verdicts)."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from bridge.config import BridgeConfig, parse_config
from bridge.core.record import Record, RecordView
from bridge.core.routing import Invocation, Poison, Route, Router, Skip
from bridge.ingress import Client

HEAD = '[kafka]\nbootstrap_servers = "b:9092"\n'


def router(routes: str) -> Router:
    return Router(parse_config(HEAD + routes, Path("routes.toml"), {}))


def record(
    *,
    topic: str = "orders",
    partition: int = 2,
    offset: int = 17,
    key: bytes | None = b"k1",
    value: bytes | None = b'{"customer": {"id": "c-9"}, "n": 5, "ok": true, "payload": [1, 2]}',
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Record:
    return Record(topic, partition, offset, 1_700_000_000_000, key, value, headers)


def path(inv: Invocation) -> str:
    """The ingress path the client builds for ``inv`` (without ``/send``)."""
    return inv.target(Client("http://ingress")).path


def one(r: Router, rec: Record) -> Invocation:
    (planned,) = r.plan(rec)
    assert isinstance(planned, Invocation), planned
    return planned


def poison(r: Router, rec: Record) -> Poison:
    (planned,) = r.plan(rec)
    assert isinstance(planned, Poison), planned
    return planned


def service(extra: str = "", *, topic: str = 'topic = "orders"', name: str = "") -> str:
    named = f'name = "{name}"\n' if name else ""
    return (
        f'\n[[routes]]\n{named}{topic}\ntarget = "service"\nservice = "Svc"\nhandler = "h"\n{extra}'
    )


def obj(extra: str = "", *, key: str = "{key}") -> str:
    return (
        f'\n[[routes]]\ntopic = "orders"\ntarget = "object"\nservice = "Obj"\nhandler = "add"\n'
        f'key = "{key}"\n{extra}'
    )


# -- topics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_line", "topic", "routed"),
    [
        ('topic = "orders"', "orders", True),
        ('topic = "orders"', "orders2", False),
        ('topics = ["a", "orders"]', "orders", True),
        ('topics = ["a", "orders"]', "b", False),
        ('topic_pattern = "ord.*"', "orders", True),
        ('topic_pattern = "ord.*"', "xorders", False),
        ('topic_pattern = "orders|refunds"', "refunds", True),
    ],
)
def test_topic_matching(topic_line: str, topic: str, routed: bool) -> None:
    planned = router(service(topic=topic_line)).plan(record(topic=topic))
    assert len(planned) == (1 if routed else 0)


def test_unrouted_record_plans_nothing() -> None:
    assert router(service()).plan(record(topic="elsewhere")) == []


def test_routes_for_is_cached_per_topic() -> None:
    r = router(service() + service(topic='topic = "other"', name="b"))
    first = r.routes_for("orders")
    assert [x.name for x in first] == ["Svc.h"]
    assert r.routes_for("orders") is first
    assert r.routes_for("nothing") == ()


# -- match -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "rec", "matched"),
    [
        ('{ "key" = "k1" }', record(), True),
        ('{ "key" = "k2" }', record(), False),
        ('{ "key" = "k1" }', record(key=None), False),
        ('{ "key" = "k1" }', record(key=b"\xff"), False),
        ('{ "header.kind" = "credit" }', record(headers=(("kind", b"credit"),)), True),
        ('{ "header.kind" = "credit" }', record(headers=(("kind", b"debit"),)), False),
        (
            '{ "header.kind" = "credit" }',
            record(headers=(("kind", b"credit"), ("kind", b"debit"))),
            False,
        ),
        ('{ "header.kind" = "credit" }', record(), False),  # missing header: no match
        ('{ "header.n" = 5 }', record(headers=(("n", b"5"),)), True),
        ('{ "header.urgent" = true }', record(headers=(("urgent", b"true"),)), True),
        ('{ "header.urgent" = true }', record(headers=(("urgent", b"1"),)), False),
        ('{ "value.customer.id" = "c-9" }', record(), True),
        ('{ "value.customer.id" = "c-8" }', record(), False),
        ('{ "value.n" = 5 }', record(), True),
        ('{ "value.n" = 5.0 }', record(), True),
        ('{ "value.n" = 6 }', record(), False),
        ('{ "value.n" = "5" }', record(), False),  # a string never equals a JSON number
        ('{ "value.ok" = true }', record(), True),
        ('{ "value.ok" = false }', record(), False),
        ('{ "value.ok" = 1 }', record(), False),  # a bool is not a number
        ('{ "value.n" = true }', record(value=b'{"n": 1}'), False),
        ('{ "value.missing" = 1 }', record(), False),  # JSON without the field: no match
        ('{ "key" = "k1", "value.n" = 5 }', record(), True),
        ('{ "key" = "k1", "value.n" = 4 }', record(), False),
        ('{ "topic" = "orders", "partition" = 2 }', record(), True),
    ],
)
def test_match(match: str, rec: Record, matched: bool) -> None:
    planned = router(service(f"match = {match}\n")).plan(rec)
    assert planned == ([one(router(service()), rec)] if matched else [])


@pytest.mark.parametrize("value", [b"not json", b"\xff\xfe", None])
def test_value_match_on_a_non_json_value_is_poison(value: bytes | None) -> None:
    r = router(service('match = { "value.kind" = "x" }\n'))
    verdict = poison(r, record(value=value))
    assert verdict.route == "Svc.h"
    if value is None:
        assert verdict.reason == ("the record has no value (a tombstone), so it has no JSON fields")
    else:
        assert verdict.reason.startswith("the record value is not JSON (")


def test_header_match_on_a_non_json_value_is_fine() -> None:
    r = router(service('match = { "header.kind" = "x" }\n'))
    assert one(r, record(value=b"plain", headers=(("kind", b"x"),))).body == b"plain"


# -- fan-out and idempotency keys -----------------------------------------------------------


def test_fan_out_gives_one_invocation_per_route_with_distinct_idempotency_keys() -> None:
    r = router(service() + obj())
    first, second = r.plan(record())
    assert isinstance(first, Invocation)
    assert isinstance(second, Invocation)
    assert (first.route, second.route) == ("Svc.h", "Obj.add")
    assert first.idempotency_key == "orders-2-17:Svc.h"
    assert second.idempotency_key == "orders-2-17:Obj.add"


def test_fan_out_poison_on_one_route_does_not_stop_the_other() -> None:
    r = router(service() + obj(key="{header.customer}"))
    inv, bad = r.plan(record())
    assert isinstance(inv, Invocation)
    assert bad == Poison("Obj.add", "header 'customer' is missing")


def test_default_idempotency_key_is_unique_per_record_and_route() -> None:
    r = router(service() + service(name="audit"))
    keys = set()
    for topic in ("orders",):
        for partition in (0, 1):
            for offset in (0, 1, 10):
                for planned in r.plan(record(topic=topic, partition=partition, offset=offset)):
                    assert isinstance(planned, Invocation)
                    assert planned.idempotency_key is not None
                    keys.add(planned.idempotency_key)
    assert len(keys) == 2 * 3 * 2
    assert "orders-1-10:audit" in keys


def test_custom_idempotency_key_and_none() -> None:
    r = router(service('idempotency_key = "{value.customer.id}"\n'))
    assert one(r, record()).idempotency_key == "c-9:Svc.h"
    r = router(service('idempotency_key = "none"\n'))
    assert one(r, record()).idempotency_key is None


def test_workflow_run_has_no_idempotency_key_and_no_lane_sharing_across_services() -> None:
    r = router(
        '\n[[routes]]\ntopic = "orders"\ntarget = "workflow"\nservice = "Wf"\nhandler = "run"\n'
        'key = "{value.customer.id}"\n'
    )
    inv = one(r, record())
    assert inv.kind == "workflow"
    assert inv.idempotency_key is None
    assert inv.key == "c-9"
    assert path(inv) == "/Wf/c-9/run"
    assert inv.lane == ("Wf", "c-9")


# -- delay -----------------------------------------------------------------------------------


def test_fixed_delay() -> None:
    assert one(router(service('delay = "1h30m"\n')), record()).delay == timedelta(minutes=90)


def test_zero_delay_is_no_delay() -> None:
    assert one(router(service('delay = "0s"\n')), record()).delay is None


@pytest.mark.parametrize(
    ("header", "delay"),
    [(b"4s", timedelta(seconds=4)), (b"PT1M", timedelta(minutes=1)), (b"0ms", None)],
)
def test_delay_from_a_header(header: bytes, delay: timedelta | None) -> None:
    r = router(service('delay = "{header.delay}"\n'))
    assert one(r, record(headers=(("delay", header),))).delay == delay


def test_malformed_delay_is_poison() -> None:
    r = router(service('delay = "{header.delay}"\n'))
    assert poison(r, record(headers=(("delay", b"soon"),))) == Poison(
        "Svc.h", "delay: bad duration 'soon'; write it like '4s', '500ms', '1h30m' or 'PT2S'"
    )


def test_missing_delay_header_is_poison() -> None:
    r = router(service('delay = "{header.delay}"\n'))
    assert poison(r, record()) == Poison("Svc.h", "header 'delay' is missing")


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "rec", "key"),
    [
        ("{key}", record(), "k1"),
        ("{header.customer}", record(headers=(("customer", b"c-7"),)), "c-7"),
        ("{value.customer.id}", record(), "c-9"),
        ("acct-{value.n}", record(), "acct-5"),
        ("{topic}/{partition}", record(), "orders/2"),
    ],
)
def test_key_templates(template: str, rec: Record, key: str) -> None:
    assert one(router(obj(key=template)), rec).key == key


@pytest.mark.parametrize(
    ("template", "rec", "reason"),
    [
        ("{header.customer}", record(), "header 'customer' is missing"),
        ("{value.nope}", record(), "field 'value.nope' is missing from the JSON value"),
        ("{key}", record(key=None), "the record has no key"),
        (
            "{key}",
            record(key=b"\xff"),
            "key is not UTF-8 text; use {key.hex} or {key.base64} for binary keys",
        ),
        ("{key}", record(key=b""), "the key template '{key}' rendered an empty key"),
        (
            "{header.customer}",
            record(headers=(("customer", b""),)),
            "the key template '{header.customer}' rendered an empty key",
        ),
        ("{value.customer.id}", record(value=b"nope"), None),
    ],
)
def test_bad_keys_are_poison(template: str, rec: Record, reason: str | None) -> None:
    verdict = poison(router(obj(key=template)), rec)
    assert verdict.route == "Obj.add"
    if reason is None:
        assert verdict.reason.startswith("the record value is not JSON (")
    else:
        assert verdict.reason == reason


# -- headers ---------------------------------------------------------------------------------


def test_only_listed_and_present_headers_are_forwarded() -> None:
    r = router(service('headers = ["x-trace", "x-absent", "x-tenant"]\n'))
    rec = record(
        headers=(("x-trace", b"t-1"), ("x-secret", b"s"), ("x-tenant", b"a"), ("x-trace", b"t-2"))
    )
    assert one(r, rec).headers == {"x-trace": "t-2", "x-tenant": "a"}


def test_no_headers_listed_forwards_none() -> None:
    assert one(router(service()), record(headers=(("x-trace", b"t"),))).headers == {}


def test_non_utf8_forwarded_header_is_poison() -> None:
    r = router(service('headers = ["x-trace"]\n'))
    assert poison(r, record(headers=(("x-trace", b"\xff"),))) == Poison(
        "Svc.h", "header 'x-trace' is not UTF-8 text"
    )


# -- body ------------------------------------------------------------------------------------


def test_default_body_is_the_raw_value_untouched() -> None:
    raw = b'{ "b":1,   "a" : [ 1 ,2 ] }'
    inv = one(router(service()), record(value=raw))
    assert inv.body is raw  # the very bytes, not re-encoded
    assert inv.content_type == "application/json"


def test_default_body_of_a_tombstone_is_nothing() -> None:
    inv = one(router(service()), record(value=None))
    assert (inv.body, inv.content_type) == (None, None)


def test_non_json_value_passes_through_with_the_configured_content_type() -> None:
    r = router(service('content_type = "text/plain"\n'))
    inv = one(r, record(value=b"\xffbinary"))
    assert (inv.body, inv.content_type) == (b"\xffbinary", "text/plain")


@pytest.mark.parametrize(
    ("value", "body"),
    [
        (b'{"payload": {"b": 1, "a": [1, 2]}}', b'{"b":1,"a":[1,2]}'),
        (b'{"payload": "text"}', b'"text"'),
        (b'{"payload": 5}', b"5"),
        (b'{"payload": null}', b"null"),
    ],
)
def test_json_sub_document_body(value: bytes, body: bytes) -> None:
    inv = one(router(service('body = "{value.payload}"\n')), record(value=value))
    assert inv.body == body
    assert orjson.loads(inv.body) == orjson.loads(value)["payload"]
    assert inv.content_type == "application/json"


def test_json_sub_document_missing_is_poison() -> None:
    r = router(service('body = "{value.payload}"\n'))
    assert poison(r, record(value=b"{}")) == Poison(
        "Svc.h", "field 'value.payload' is missing from the JSON value"
    )


def test_body_none_sends_nothing() -> None:
    inv = one(router(service('body = "none"\n')), record())
    assert (inv.body, inv.content_type) == (None, None)


@pytest.mark.parametrize(
    ("template", "body"),
    [
        ("order {key} for {value.customer.id}", b'"order k1 for c-9"'),
        ("{key}", b'"k1"'),
        ('say \\"{value.n}\\"', b'"say \\"5\\""'),
    ],
)
def test_text_template_body_is_a_json_string(template: str, body: bytes) -> None:
    inv = one(router(service(f'body = "{template}"\n')), record())
    assert inv.body == body
    assert inv.content_type == "application/json"


# -- path and lanes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("plain", "/Obj/plain/add"),
        ("a/b", "/Obj/a%2Fb/add"),
        ("with space", "/Obj/with%20space/add"),
        ("ünï", "/Obj/%C3%BCn%C3%AF/add"),
        ("q?x#y%z", "/Obj/q%3Fx%23y%25z/add"),
    ],
)
def test_path_percent_encodes_keys(key: str, expected: str) -> None:
    inv = one(router(obj()), record(key=key.encode()))
    assert inv.key == key
    assert path(inv) == expected


def test_service_path_has_no_key() -> None:
    inv = one(router(service()), record())
    assert inv.key is None
    assert path(inv) == "/Svc/h"
    assert inv.kind == "service"


def test_lanes() -> None:
    assert one(router(obj()), record(key=b"a/b")).lane == ("Obj", "a/b")
    assert one(router(service()), record()).lane is None
    partitioned = router(service('ordering = "partition"\n', name="p"))
    assert one(partitioned, record(partition=4)).lane == ("p", "orders", 4)
    unordered = router(obj('ordering = "none"\n'))
    assert one(unordered, record()).lane is None


def test_invocation_fields() -> None:
    inv = one(router(obj('delay = "2.5s"\nheaders = ["x-trace"]\n')), record())
    assert inv == Invocation(
        route="Obj.add",
        kind="object",
        service="Obj",
        handler="add",
        key="k1",
        body=record().value,
        content_type="application/json",
        delay=timedelta(seconds=2.5),
        idempotency_key="orders-2-17:Obj.add",
        headers={},
        lane=("Obj", "k1"),
    )


# -- hostile records: every part of the request is checked -----------------------------------


def config_with(routes: str, **changes: object) -> BridgeConfig:
    """A parsed config whose first route gets ``changes``, as if `check` had been bypassed."""
    config = parse_config(HEAD + routes, Path("routes.toml"), {})
    first = dataclasses.replace(config.routes[0], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(config, routes=(first, *config.routes[1:]))


def with_max_delay(routes: str, max_delay: timedelta) -> Router:
    config = parse_config(HEAD + routes, Path("routes.toml"), {})
    delivery = dataclasses.replace(config.delivery, max_delay=max_delay)
    return Router(dataclasses.replace(config, delivery=delivery))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"1000000000d", "delay: '1000000000d' is too long"),
        (b"1" * 400 + b"s", "delay: '" + "1" * 40 + "'... (401 characters) is too long"),
        (b"P99999999999D", "delay: 'P99999999999D' is too long"),
        (b"366d", "delay 366d exceeds max_delay 365d"),
        (b"8760h1ms", "delay 365d1ms exceeds max_delay 365d"),
        (b"-1s", "delay: bad duration '-1s'; write it like '4s', '500ms', '1h30m' or 'PT2S'"),
        (b"nan s", "delay: bad duration 'nan s'; write it like '4s', '500ms', '1h30m' or 'PT2S'"),
        (b"inf", "delay: bad duration 'inf'; write it like '4s', '500ms', '1h30m' or 'PT2S'"),
        (b"", "delay: empty duration; write it like '4s', '500ms', '1h30m' or 'PT2S'"),
        (b"\xff", "header 'delay' is not UTF-8 text"),
    ],
)
def test_absurd_delays_are_poison(header: bytes, reason: str) -> None:
    r = router(service('delay = "{header.delay}"\n'))
    assert poison(r, record(headers=(("delay", header),))) == Poison("Svc.h", reason)


def test_delay_at_max_delay_is_sent() -> None:
    r = router(service('delay = "{header.delay}"\n'))
    assert one(r, record(headers=(("delay", b"365d"),))).delay == timedelta(days=365)


def test_max_delay_comes_from_the_delivery_section() -> None:
    r = with_max_delay(service('delay = "{header.delay}"\n'), timedelta(hours=1))
    assert one(r, record(headers=(("delay", b"1h"),))).delay == timedelta(hours=1)
    assert poison(r, record(headers=(("delay", b"61m"),))) == Poison(
        "Svc.h", "delay 1h1m exceeds max_delay 1h"
    )
    fixed = with_max_delay(service('delay = "2h"\n'), timedelta(hours=1))
    assert poison(fixed, record()) == Poison("Svc.h", "delay 2h exceeds max_delay 1h")


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (b"a\r\nx-restate-evil: 1", "a control character"),
        (b"line\nbreak", "a control character"),
        (b"nul\x00", "a control character"),
        (b"bell\x07", "a control character"),
        (b"del\x7f", "a control character"),
        ("ünï".encode(), "non-ASCII text"),
    ],
)
def test_forwarded_header_with_illegal_value_is_poison(value: bytes, what: str) -> None:
    r = router(service('headers = ["x-trace"]\n'))
    verdict = poison(r, record(headers=(("x-trace", value),)))
    assert verdict.route == "Svc.h"
    assert verdict.reason.startswith(f"header 'x-trace' holds {what}, which an HTTP header ")
    assert repr(value.decode()) in verdict.reason


@pytest.mark.parametrize("value", [b"", b" spaced  out ", b"tab\there", b"!~{}\"'", b"x" * 8192])
def test_forwarded_header_with_legal_value_is_sent(value: bytes) -> None:
    r = router(service('headers = ["x-trace"]\n'))
    assert one(r, record(headers=(("x-trace", value),))).headers == {"x-trace": value.decode()}


def test_forwarded_header_too_long_is_poison() -> None:
    r = router(service('headers = ["x-trace"]\n'))
    assert poison(r, record(headers=(("x-trace", b"x" * 8193),))) == Poison(
        "Svc.h", "header 'x-trace' is 8193 bytes long; a forwarded header may have at most 8192"
    )


@pytest.mark.parametrize(
    "name", ["authorization", "Idempotency-Key", "content-type", "X-Restate-Id", "host", "te"]
)
def test_reserved_forwarded_header_is_never_sent(name: str) -> None:
    r = Router(config_with(service(), headers=(name, "x-ok")))
    assert one(r, record(headers=(("x-ok", b"1"),))).headers == {"x-ok": "1"}  # absent: nothing
    assert poison(r, record(headers=((name, b"Bearer stolen"), ("x-ok", b"1")))) == Poison(
        "Svc.h",
        f"header {name!r} cannot be forwarded: the bridge or HTTP sets it, a record may not",
    )


@pytest.mark.parametrize("name", ["x trace", "x:trace", "x-trace\r\nevil", "ü", "(x)"])
def test_forwarded_header_name_that_is_no_http_token_is_never_sent(name: str) -> None:
    r = Router(config_with(service(), headers=(name,)))
    assert poison(r, record(headers=((name, b"v"),))) == Poison(
        "Svc.h", f"header {name!r} cannot be forwarded: it is not a valid HTTP header name"
    )


@pytest.mark.parametrize("content_type", ["", "text/plain\r\nx-restate-evil: 1", "tëxt/plain"])
def test_illegal_content_type_is_poison_not_a_broken_request(content_type: str) -> None:
    r = Router(config_with(service(), content_type=content_type))
    verdict = poison(r, record())
    assert verdict.reason.startswith(f"content_type {content_type!r} is not a legal header value")


def test_key_length_is_bounded_in_utf8_bytes() -> None:
    r = router(obj())
    assert one(r, record(key=b"k" * 4096)).key == "k" * 4096
    assert one(r, record(key="ü".encode() * 2048)).key == "ü" * 2048
    assert poison(r, record(key=b"k" * 4097)) == Poison(
        "Obj.add",
        "the key template '{key}' rendered a object key of 4097 bytes; "
        "the limit is 4096 bytes of UTF-8",
    )
    wf = router(
        '\n[[routes]]\ntopic = "orders"\ntarget = "workflow"\nservice = "Wf"\nhandler = "run"\n'
        'key = "{value.id}"\n'
    )
    verdict = poison(wf, record(value=orjson.dumps({"id": "ü" * 2049})))
    assert verdict.reason == (
        "the key template '{value.id}' rendered a workflow id of 4098 bytes; "
        "the limit is 4096 bytes of UTF-8"
    )


def test_non_ascii_idempotency_key_is_poison_naming_the_field() -> None:
    r = router(obj(key="{key.hex}"))  # the object key is fine; the default idempotency key is too
    inv = one(r, record(topic="orders", key="ünï".encode()))
    assert inv.idempotency_key == "orders-2-17:Obj.add"
    custom = router(obj('idempotency_key = "{key}"\n'))
    assert poison(custom, record(key="ünï".encode())) == Poison(
        "Obj.add",
        "the idempotency_key template '{key}' rendered 'ünï:Obj.add', which is not printable "
        "ASCII (Restate refuses other header values); use {key.hex} or {key.base64} for keys",
    )
    binary = router(obj('idempotency_key = "{key.hex}"\n', key="{key.hex}"))
    assert one(binary, record(key="ünï".encode())).idempotency_key == "c3bc6ec3af:Obj.add"


@pytest.mark.parametrize("rendered", ["a\tb", "a\nb", "a\x00b", "a\x7fb"])
def test_idempotency_key_with_control_characters_is_poison(rendered: str) -> None:
    r = router(service('idempotency_key = "{header.id}"\n'))
    verdict = poison(r, record(headers=(("id", rendered.encode()),)))
    assert verdict.reason.startswith("the idempotency_key template '{header.id}' rendered ")
    assert "not printable ASCII" in verdict.reason


def test_default_idempotency_key_of_a_non_ascii_topic_is_poison() -> None:
    # Kafka topic names are ASCII; a record claiming otherwise still cannot break a request
    verdict = poison(router(service(topic='topic_pattern = ".*"')), record(topic="ördérs"))
    assert verdict.reason.startswith(
        "the idempotency_key template '{topic}-{partition}-{offset}' rendered 'ördérs-2-17:Svc.h'"
    )


def test_idempotency_key_length_is_bounded() -> None:
    r = router(service('idempotency_key = "{header.id}"\n'))
    ok = "i" * (1024 - len(":Svc.h"))
    assert one(r, record(headers=(("id", ok.encode()),))).idempotency_key == f"{ok}:Svc.h"
    assert poison(r, record(headers=(("id", ok.encode() + b"i"),))) == Poison(
        "Svc.h",
        "the idempotency_key template '{header.id}' rendered 1025 characters; the limit is 1024",
    )


# -- binary keys -----------------------------------------------------------------------------

BINARY = b"\x00\xff\xfe/+="


def test_binary_key_through_hex_and_base64_templates() -> None:
    hex_route = router(obj(key="{key.hex}"))
    inv = one(hex_route, record(key=BINARY))
    assert inv.key == "00fffe2f2b3d"
    assert path(inv) == "/Obj/00fffe2f2b3d/add"
    b64 = one(router(obj(key="{key.base64}")), record(key=BINARY))
    assert b64.key == "AP/+Lys9"  # standard alphabet, padded
    assert path(b64) == "/Obj/AP%2F%2BLys9/add"
    assert one(router(obj(key="{key.base64}")), record(key=b"\xff")).key == "/w=="


def test_binary_key_in_body_and_match() -> None:
    body = router(service('body = "k={key.hex}"\nmatch = { "key.hex" = "00fffe2f2b3d" }\n'))
    assert one(body, record(key=BINARY)).body == b'"k=00fffe2f2b3d"'
    assert body.plan(record(key=b"other")) == []


def test_utf8_template_meeting_a_binary_key_suggests_hex_and_base64() -> None:
    verdict = poison(router(obj()), record(key=BINARY))
    assert verdict.reason == "key is not UTF-8 text; use {key.hex} or {key.base64} for binary keys"


# -- tombstones ------------------------------------------------------------------------------


def test_tombstone_on_null_send_is_the_default() -> None:
    inv = one(router(service()), record(value=None))
    assert (inv.body, inv.content_type) == (None, None)
    inv = one(router(service('on_null = "send"\n')), record(value=None))
    assert (inv.body, inv.content_type) == (None, None)


def test_tombstone_on_null_skip_and_dead_letter() -> None:
    assert router(service('on_null = "skip"\n')).plan(record(value=None)) == [Skip("Svc.h")]
    assert router(service('on_null = "dead_letter"\n')).plan(record(value=None)) == [
        Poison(
            "Svc.h",
            'the record has a null value (a tombstone) and the route says on_null = "dead_letter"',
        )
    ]
    # a record with a value, even an empty one, is not a tombstone
    assert one(router(service('on_null = "skip"\n')), record(value=b"")).body == b""


@pytest.mark.parametrize("on_null", ["skip", "dead_letter"])
def test_a_tombstone_the_route_does_not_match_is_left_alone(on_null: str) -> None:
    r = router(service(f'on_null = "{on_null}"\nmatch = {{ "header.kind" = "x" }}\n'))
    assert r.plan(record(value=None, headers=(("kind", b"y"),))) == []
    assert len(r.plan(record(value=None, headers=(("kind", b"x"),)))) == 1


def test_a_tombstone_is_skipped_by_a_route_matching_on_its_value() -> None:
    # there is no JSON to compare; the route's on_null decides, whatever order match lists
    r = router(service('on_null = "skip"\nmatch = { "value.kind" = "x", "key" = "k1" }\n'))
    assert r.plan(record(value=None)) == [Skip("Svc.h")]
    assert r.plan(record(value=None, key=b"k2")) == []


def test_plain_match_entries_rule_a_record_out_before_json_ones_poison_it() -> None:
    r = router(service('match = { "value.kind" = "x", "header.kind" = "x" }\n'))
    assert r.plan(record(value=b"not json")) == []  # no header.kind: not this route's record
    verdict = poison(r, record(value=b"not json", headers=(("kind", b"x"),)))
    assert verdict.reason.startswith("the record value is not JSON (")


# -- JSON numbers ----------------------------------------------------------------------------

BIG = 123456789012345678901234567890


def test_integers_beyond_64_bits_stay_exact_in_keys_and_bodies() -> None:
    # orjson alone reads them as floats: two customers would share the key '1.2345678901234568e+29'
    value = orjson.dumps({"id": "ID", "payload": {"n": "N"}})
    value = value.replace(b'"ID"', str(BIG).encode()).replace(b'"N"', str(BIG + 1).encode())
    r = router(obj('body = "{value.payload}"\n', key="{value.id}"))
    inv = one(r, record(value=value))
    assert inv.key == str(BIG)
    assert inv.body == f'{{"n":{BIG + 1}}}'.encode()
    huge = 10**300 + 1
    assert one(r, record(value=value.replace(str(BIG).encode(), str(huge).encode()))).key == str(
        huge
    )


def test_a_document_too_deep_to_read_exactly_is_poison() -> None:
    r = router(obj(key="{value.0}"))
    deep = b"[" * 1000 + b"1" * 25 + b"]" * 1000
    verdict = poison(r, record(value=deep))
    assert verdict.reason.startswith("the record value cannot be read exactly (maximum recursion")


# -- plan never raises -----------------------------------------------------------------------


def test_an_unexpected_error_is_poison_for_that_route_only_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    r = router(service() + obj())
    real = Route.invocation

    class Surprise(Exception):
        pass

    def explode(self: Route, view: RecordView) -> Invocation:
        if self.name == "Obj.add":
            raise Surprise("boom")
        return real(self, view)

    monkeypatch.setattr(Route, "invocation", explode)
    with caplog.at_level(logging.ERROR, logger="bridge.core.routing"):
        first, second = r.plan(record(offset=99))
    assert isinstance(first, Invocation)
    assert second == Poison("Obj.add", "internal error while planning: Surprise: boom")
    (entry,) = caplog.records
    assert entry.getMessage() == "orders-2@99: route Obj.add: internal error while planning"
    assert entry.exc_info is not None


# -- scope and limit key ------------------------------------------------------------------------

TENANT = (("tenant", b"acme"),)


def test_scope_and_limit_key_are_rendered_per_record() -> None:
    r = router(
        obj('scope = "{header.tenant}"\nlimit_key = "{header.tenant}/{value.customer.id}"\n')
    )
    inv = one(r, record(headers=TENANT))
    assert (inv.scope, inv.limit_key) == ("acme", "acme/c-9")
    target = inv.target(Client("http://ingress"))
    assert target.scope == "acme"
    assert target.send_path == "/restate/scope/acme/send/Obj/k1/add"


def test_a_scoped_key_lane_is_per_scope() -> None:
    """One scope's object is not another's: their records need no common order."""
    r = router(obj('scope = "{header.tenant}"\n'))
    a = one(r, record(headers=TENANT))
    b = one(r, record(headers=(("tenant", b"globex"),)))
    assert a.lane == ("Obj", "k1", "acme")
    assert b.lane == ("Obj", "k1", "globex")
    unscoped = one(router(obj()), record())
    assert unscoped.lane == ("Obj", "k1")
    assert unscoped.scope is None
    assert unscoped.limit_key is None


def test_a_constant_scope_on_a_service() -> None:
    inv = one(router(service('scope = "batch-jobs"\nlimit_key = "nightly"\n')), record())
    assert (inv.scope, inv.limit_key) == ("batch-jobs", "nightly")
    assert inv.target(Client("http://i")).send_url() == (
        "http://i/restate/scope/batch-jobs/send/Svc/h"
    )


RULE = "1 to 36 of the characters a-z A-Z 0-9 _ . -"


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        (
            (),
            b"{}",
            "header 'tenant' is missing",
        ),
        (
            (("tenant", b"acme corp"),),
            b'{"user": "u1"}',
            "the scope template '{header.tenant}' rendered an unusable value: scope 'acme corp' "
            f"holds characters Restate refuses; it allows {RULE}",
        ),
        (
            (("tenant", b""),),
            b'{"user": "u1"}',
            "the scope template '{header.tenant}' rendered an unusable value: scope '' is empty",
        ),
        (
            (("tenant", b"t" * 37),),
            b'{"user": "u1"}',
            f"the scope template '{{header.tenant}}' rendered an unusable value: scope "
            f"'{'t' * 37}' is 37 characters long; Restate allows {RULE}",
        ),
        (
            TENANT,
            b'{"user": "a/b"}',
            "the limit_key template '{header.tenant}/{value.user}' rendered an unusable value: "
            "limit key 'acme/a/b' has 3 parts; Restate allows one or two joined by '/' (such as "
            "'tenant' or 'tenant/user')",
        ),
        (
            TENANT,
            b'{"user": "\\u00fcser"}',
            "the limit_key template '{header.tenant}/{value.user}' rendered an unusable value: "
            f"limit key 'acme/\u00fcser' (part '\u00fcser') holds characters Restate refuses; "
            f"it allows {RULE}",
        ),
        (TENANT, b"not json", None),
        (TENANT, b"{}", None),
    ],
)
def test_a_bad_scope_or_limit_key_is_poison_naming_it(
    headers: tuple[tuple[str, bytes], ...], value: bytes, reason: str | None
) -> None:
    r = router(obj('scope = "{header.tenant}"\nlimit_key = "{header.tenant}/{value.user}"\n'))
    verdict = poison(r, record(headers=headers, value=value))
    if reason is not None:
        assert verdict.reason == reason
    else:  # the value is not JSON, or has no user: the field's own reason
        assert "value" in verdict.reason or "user" in verdict.reason


def test_a_bad_scope_on_one_route_does_not_stop_the_other() -> None:
    r = router(obj('scope = "{header.tenant}"\n') + service())
    planned = r.plan(record(headers=(("tenant", b"a b"),)))
    assert [type(p) for p in planned] == [Poison, Invocation]
