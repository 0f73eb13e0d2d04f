"""Property tests for the pure core: whatever bytes a record holds, planning it yields invocations
the HTTP layer can send, reasoned poisons or skips, and nothing else (no exception).

The validator below does not reuse the bridge's own checks: it asks the libraries that build the
request (yarl for the URL, aiohttp's header serializer, ``http.client``'s header rules) and
Restate's documented limits (ASCII header values).
"""

from __future__ import annotations

import dataclasses
import http.client
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from aiohttp.http_writer import _serialize_headers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from yarl import URL

from bridge.config import parse_config
from bridge.core.durations import DurationError, parse_duration
from bridge.core.record import RESERVED_HEADERS, Record, reserved_header
from bridge.core.routing import MAX_KEY_BYTES, Invocation, Poison, Router, Skip
from bridge.core.template import Template, TemplateError
from bridge.ingress import Client

ROUTES = """
[kafka]
bootstrap_servers = "b:9092"

[[routes]]
name = "plain-key"
topic_pattern = ".*"
target = "object"
service = "Obj"
handler = "add"
key = "{key}"
delay = "{header.delay}"
headers = ["x-trace", "traceparent", "kind"]

[[routes]]
name = "hex-key"
topic = "t"
target = "object"
service = "Obj"
handler = "add"
key = "{key.hex}"
body = "{value.payload}"
match = { "header.kind" = "a" }
on_null = "skip"

[[routes]]
name = "header-key"
topic = "t"
target = "object"
service = "Obj"
handler = "add"
key = "{header.customer}"
idempotency_key = "{key}"
on_null = "dead_letter"

[[routes]]
name = "workflow"
topic = "t"
target = "workflow"
service = "Wf"
handler = "run"
key = "{value.id}"

[[routes]]
name = "templated-body"
topic = "t"
target = "service"
service = "Svc"
handler = "h"
body = "k={key.base64} name={value.name} at {offset}"
match = { "value.kind" = "x" }

[[routes]]
name = "header-delay"
topic = "t"
target = "service"
service = "Svc"
handler = "later"
delay = "{header.delay}"
idempotency_key = "{header.id}-{value.order.id}"
headers = ["x-trace"]
content_type = "text/plain"

[[routes]]
name = "binary-match"
topic = "t"
target = "object"
service = "Bin"
handler = "put"
key = "{key.base64}"
idempotency_key = "{key.hex}"
match = { "key.hex" = "00ff", "header.urgent" = true }
"""

CONFIG = parse_config(ROUTES, Path("routes.toml"), {})
ROUTER = Router(CONFIG)
SHORT = dataclasses.replace(CONFIG.delivery, max_delay=timedelta(hours=1))
SHORT_ROUTER = Router(dataclasses.replace(CONFIG, delivery=SHORT))
# a routing file that did not go through `check`: reserved and malformed names to forward
UNCHECKED = dataclasses.replace(
    CONFIG.routes[0], headers=("authorization", "X-Restate-Id", "x trace", "x-trace")
)
UNCHECKED_ROUTER = Router(dataclasses.replace(CONFIG, routes=(UNCHECKED,)))
ROUTERS = st.sampled_from([(ROUTER, CONFIG), (SHORT_ROUTER, CONFIG), (UNCHECKED_ROUTER, CONFIG)])

HEADER_NAMES = ["delay", "x-trace", "traceparent", "kind", "customer", "id", "urgent", "x trace"]
FIELD_WORDS = (
    "key",
    "header",
    "value",
    "delay",
    "idempotency_key",
    "body",
    "content_type",
    "tombstone",
)


def json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**30), max_value=10**30)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["id", "name", "kind", "payload", "order", "x"]), children
            )
        ),
        max_leaves=12,
    )


def encode(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # an integer beyond 64 bits: written by hand, as another producer would
        import json

        return json.dumps(doc).encode()


good_delays = st.sampled_from(["4s", "0ms", "59m", "61m", "365d", "PT2S", "1h30m"]).map(str.encode)
bad_delays = st.sampled_from(["366d", "1000000000d", "P99999999999D", "-1s", "", "soon"])
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
hostile_values = (
    st.binary(max_size=40)
    | st.text(max_size=40).map(str.encode)
    | st.sampled_from([b"a\r\nx-restate-evil: 1", b"\x00", b"tab\tok", "\u00fc".encode()])
    | st.binary(min_size=8190, max_size=8200)
)


def mostly(good: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Sensible three times out of four, hostile otherwise."""
    return st.one_of(good, good, good, hostile_values)


# the names routes read, usually present and usually sensible; then anything at all
known_headers = st.fixed_dictionaries(
    {
        "delay": st.one_of(good_delays, good_delays, bad_delays.map(str.encode), hostile_values),
        "customer": mostly(printable.filter(bool).map(str.encode)),
        "kind": mostly(st.sampled_from([b"a", b"b"])),
        "id": mostly(printable.map(str.encode)),
    },
    optional={
        "x-trace": mostly(printable.map(str.encode)),
        "traceparent": printable.map(str.encode),
        "urgent": st.sampled_from([b"true", b"1"]),
        "authorization": st.just(b"Bearer stolen"),
        "X-Restate-Id": st.just(b"inv_1"),
        "x trace": printable.map(str.encode),
    },
).map(lambda d: tuple(d.items()))
other_headers = st.lists(
    st.tuples(
        st.sampled_from(HEADER_NAMES) | st.text(max_size=12),
        mostly(printable.map(str.encode)) | st.none(),
    ),
    max_size=4,  # repeated names, odd names and null values (Kafka allows them)
).map(tuple)
headers = st.tuples(known_headers, other_headers).map(lambda t: t[0] + t[1])

keys = (
    st.text(min_size=1, max_size=64).map(str.encode)
    | printable.filter(bool).map(str.encode)
    | st.sampled_from([b"k1", b"\x00\xff"])
    | st.binary(max_size=64)
    | st.none()
    | st.sampled_from([b"", b"\x00\xff", b"a/b?c#d%e", "\u00fcn\u00ef".encode()])
    | st.integers(MAX_KEY_BYTES - 2, MAX_KEY_BYTES + 2).map(lambda n: b"k" * n)
)
documents = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["x", "y"]),
        "id": json_values(),
        "payload": json_values(),
        "order": st.fixed_dictionaries({"id": json_values()}),
    },
    optional={"name": json_values()},
).map(encode)
values = st.one_of(
    documents, documents, st.none(), st.binary(max_size=64), json_values().map(encode)
)
records = st.builds(
    Record,
    topic=st.sampled_from(["t", "t"]) | st.text(max_size=10),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
    timestamp=st.integers(-1, 2**63 - 1),
    key=keys,
    value=values,
    headers=headers,
)


def check_sendable(inv: Invocation, max_delay: timedelta) -> None:
    """Everything the ingress client and the HTTP layer need from ``inv`` to send it."""
    target = inv.target(Client("http://x"))
    url = target.send_url(delay=inv.delay)  # formats the delay as the client will
    parsed = URL(url, encoded=True)
    assert parsed.is_absolute()
    assert parsed.raw_path == target.path + "/send"
    assert all(c.isascii() and c.isprintable() and c not in " #?" for c in target.path)
    segments = target.path.split("/")[1:]
    if inv.key is None:
        assert len(segments) == 2
    else:
        assert len(segments) == 3
        assert inv.key
        assert len(inv.key.encode("utf-8")) <= MAX_KEY_BYTES
        assert unquote(segments[1], errors="strict") == inv.key  # the server decodes this back

    sent: CIMultiDict[str] = CIMultiDict(inv.headers)
    for name in inv.headers:
        assert not reserved_header(name), name
        # independent of the list under test: what the bridge itself sends
        assert not name.lower().startswith("x-restate-"), name
        assert name.lower() not in ("authorization", "idempotency-key", "content-type"), name
        assert len(inv.headers[name]) <= 8192, name
    if inv.content_type is not None:
        sent["Content-Type"] = inv.content_type
    if inv.idempotency_key is not None:
        idem = inv.idempotency_key
        assert idem.isascii(), idem
        assert idem.isprintable(), idem
        assert len(idem) <= 1024, idem
        sent["idempotency-key"] = idem
    for name, value in sent.items():
        assert http.client._is_legal_header_name(name.encode("ascii")), name  # type: ignore[attr-defined]
        assert value.isascii(), value  # Restate answers 400 to non-ASCII header values
        assert not http.client._is_illegal_header_value(value.encode("ascii")), value  # type: ignore[attr-defined]
    _serialize_headers(f"POST {parsed.raw_path_qs} HTTP/1.1", sent)  # raises on injection

    if inv.delay is not None:
        assert timedelta(0) < inv.delay <= max_delay
    assert inv.body is None or isinstance(inv.body, bytes)
    assert (inv.body is None) == (inv.content_type is None)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(ROUTERS, records)
def test_any_record_plans_to_sendable_invocations_reasoned_poisons_or_skips(
    router_config: tuple[Router, Any], record: Record
) -> None:
    router, _ = router_config
    max_delay = router.routes[0].max_delay
    planned = router.plan(record)  # never raises
    assert len(planned) <= len(router.routes_for(record.topic))
    for item in planned:
        if isinstance(item, Invocation):
            check_sendable(item, max_delay)
        elif isinstance(item, Poison):
            assert item.reason
            assert "internal error" not in item.reason, item.reason
            assert any(word in item.reason for word in FIELD_WORDS), item.reason
            assert len(item.reason) < 600, item.reason  # record data is cut, not copied whole
        else:
            assert isinstance(item, Skip)
            assert record.value is None
    assert router.plan(record) == planned  # deterministic: a redelivery plans the same


@given(st.text(max_size=30) | st.from_regex(r"\d{1,30}(\.\d{1,5})?(ms|s|m|h|d)", fullmatch=True))
def test_parse_duration_returns_a_duration_or_raises_duration_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except DurationError as exc:
        message = str(exc)
        assert message.startswith(("bad duration", "empty duration", "'"))
    else:
        assert value >= timedelta(0)


@given(st.text(max_size=30))
def test_template_parse_returns_a_template_or_raises_template_error(source: str) -> None:
    try:
        Template.parse(source)
    except TemplateError as exc:
        message = str(exc)
        assert source in message or repr(source) in message


@pytest.mark.parametrize("value", [None, b"", b"x"])
def test_tombstone_routes_are_covered(value: bytes | None) -> None:
    """The strategy reaches each on_null branch: skip, dead letter and send."""
    rec = Record("t", 0, 1, 0, b"k", value, (("kind", b"a"), ("customer", b"c")))
    kinds = {type(p).__name__ for p in ROUTER.plan(rec)}
    assert ("Skip" in kinds) == (value is None)


# -- one hostile part at a time, the rest sensible: every rule meets its edge cases ----------


def single(route: str, **changes: Any) -> tuple[Router, timedelta]:
    config = parse_config(
        '[kafka]\nbootstrap_servers = "b:9092"\n[delivery]\n\n[[routes]]\nname = "r"\n'
        'topic = "t"\n' + route,
        Path("routes.toml"),
        {},
    )
    first = dataclasses.replace(config.routes[0], **changes)
    return Router(dataclasses.replace(config, routes=(first,))), config.delivery.max_delay


def good_record(**changes: Any) -> Record:
    base = Record("t", 0, 7, 0, b"k1", b'{"id": "c-1"}', (("x-trace", b"t-1"),))
    return dataclasses.replace(base, **changes)


def plan_one(
    router: Router, record: Record, max_delay: timedelta, *fields: str
) -> Invocation | None:
    """Plan ``record`` on a one-route router: a sendable invocation, or a poison naming one of
    ``fields``."""
    (planned,) = router.plan(record)
    if isinstance(planned, Invocation):
        check_sendable(planned, max_delay)
        return planned
    assert isinstance(planned, Poison), planned
    assert any(field in planned.reason for field in fields), planned.reason
    assert "internal error" not in planned.reason
    return None


DELAY_ROUTE = single('target = "service"\nservice = "S"\nhandler = "h"\ndelay = "{header.d}"\n')
DELAY_TEXT = st.one_of(
    st.from_regex(r"\d{1,12}(\.\d{1,3})?(ms|s|m|h|d)", fullmatch=True),
    st.from_regex(r"P\d{1,12}DT\d{1,6}H", fullmatch=True),
    st.text(max_size=20),
)


@given(DELAY_TEXT.map(str.encode) | st.binary(max_size=20))
def test_any_delay_header_is_a_bounded_delay_or_a_delay_poison(raw: bytes) -> None:
    router, max_delay = DELAY_ROUTE
    inv = plan_one(router, good_record(headers=(("d", raw),)), max_delay, "delay", "header 'd'")
    if inv is None:
        return
    assert inv.delay is None or inv.delay <= max_delay


FORWARD_ROUTE = single('target = "service"\nservice = "S"\nhandler = "h"\nheaders = ["x-trace"]\n')


@given(
    st.binary(max_size=50)
    | st.text(max_size=50).map(str.encode)
    | hostile_values
    | st.integers(8190, 8194).map(lambda n: b"x" * n)
)
def test_any_forwarded_header_value_is_legal_or_a_header_poison(raw: bytes) -> None:
    router, max_delay = FORWARD_ROUTE
    inv = plan_one(router, good_record(headers=(("x-trace", raw),)), max_delay, "header 'x-trace'")
    if inv is not None:
        assert inv.headers == {"x-trace": raw.decode()}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.text(max_size=20) | st.sampled_from(sorted(RESERVED_HEADERS)), max_size=3),
    st.binary(max_size=10),
)
def test_forwarded_header_names_that_skipped_check_are_never_sent(
    names: list[str], raw: bytes
) -> None:
    router, max_delay = single(
        'target = "service"\nservice = "S"\nhandler = "h"\n', headers=tuple(names)
    )
    rec = good_record(headers=tuple((name, raw) for name in names))
    if rec.headers:
        plan_one(router, rec, max_delay, "header ")


KEY_ROUTES = [
    single(f'target = "object"\nservice = "O"\nhandler = "h"\nkey = "{{{field}}}"\n')
    for field in ("key", "key.hex", "key.base64")
]


@given(
    st.binary(max_size=80)
    | st.text(max_size=80).map(str.encode)
    | st.integers(MAX_KEY_BYTES - 4, MAX_KEY_BYTES + 4).map(lambda n: "é".encode() * (n // 2))
)
def test_any_key_is_a_sendable_path_or_a_key_poison(raw: bytes) -> None:
    for router, max_delay in KEY_ROUTES:
        inv = plan_one(router, good_record(key=raw), max_delay, "key")
        if inv is not None and router.routes[0].config.key == Template.parse("{key}"):
            assert inv.key == raw.decode()


IDEM_ROUTE = single(
    'target = "service"\nservice = "S"\nhandler = "h"\nidempotency_key = "{header.i}"\n'
)


@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_any_idempotency_key_is_printable_ascii_or_an_idempotency_poison(raw: bytes) -> None:
    router, max_delay = IDEM_ROUTE
    inv = plan_one(
        router, good_record(headers=(("i", raw),)), max_delay, "idempotency_key", "header 'i'"
    )
    if inv is None:
        return
    assert inv.idempotency_key == raw.decode() + ":r"
