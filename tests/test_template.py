"""bridge.record (field paths, lazy JSON access) and bridge.template (parse and render)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import bridge.core.record
from bridge.core.record import (
    RESERVED_HEADERS,
    FieldError,
    FieldPath,
    Record,
    RecordView,
    dump_json,
    excerpt,
    header_value_ok,
    http_token,
    reserved_header,
)
from bridge.core.template import Template, TemplateError


def rec(
    value: bytes | None = b'{"a": {"b": "deep"}, "items": [10, 20, {"x": true}], "n": 7}',
    key: bytes | None = b"k1",
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Record:
    return Record(
        topic="orders",
        partition=3,
        offset=42,
        timestamp=1_700_000_000_000,
        key=key,
        value=value,
        headers=headers,
    )


def get(record: Record, path: str) -> Any:
    return RecordView(record).get(FieldPath.parse(path))


# -- FieldPath.parse -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "root", "parts"),
    [
        ("key", "key", ()),
        ("topic", "topic", ()),
        ("partition", "partition", ()),
        ("offset", "offset", ()),
        ("timestamp", "timestamp", ()),
        ("value", "value", ()),
        ("header.kind", "header", ("kind",)),
        ("header.x.trace", "header", ("x.trace",)),  # header names may contain dots
        ("value.a", "value", ("a",)),
        ("value.a.b", "value", ("a", "b")),
        ("value.items.0", "value", ("items", "0")),
    ],
)
def test_field_path_accepted(text: str, root: str, parts: tuple[str, ...]) -> None:
    path = FieldPath.parse(text)
    assert (path.text, path.root, path.parts) == (text, root, parts)
    assert path.needs_json == (root == "value" and bool(parts))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "keys",
        "Key",
        "header",
        "header.",
        "value.a..b",
        "value.a.",
        "value..a",
        "headers.kind",
        " key",
        "topic.x",
        "partition.0",
        "value.",
    ],
)
def test_field_path_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"^unknown field ") as info:
        FieldPath.parse(text)
    assert str(info.value) == (
        f"unknown field {text!r}; use key, topic, partition, offset, timestamp, "
        "header.NAME, value or value.a.b"
    )


# -- RecordView.get --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("key", b"k1"),
        ("topic", "orders"),
        ("partition", 3),
        ("offset", 42),
        ("timestamp", 1_700_000_000_000),
        ("value.a.b", "deep"),
        ("value.a", {"b": "deep"}),
        ("value.n", 7),
        ("value.items.0", 10),
        ("value.items.1", 20),
        ("value.items.2.x", True),
    ],
)
def test_get_fields(path: str, expected: Any) -> None:
    assert get(rec(), path) == expected


def test_get_value_is_the_raw_bytes() -> None:
    raw = b'{"a" :  1}'
    assert get(rec(value=raw), "value") == raw
    assert get(rec(value=b"\xff not json"), "value") == b"\xff not json"


def test_header_last_one_wins() -> None:
    record = rec(headers=(("kind", b"debit"), ("other", b"o"), ("kind", b"credit")))
    assert get(record, "header.kind") == b"credit"
    assert get(record, "header.other") == b"o"
    assert record.header("absent") is None


def test_value_is_parsed_at_most_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real_loads = orjson.loads

    def counting_loads(data: bytes) -> Any:
        calls.append(data)
        return real_loads(data)

    monkeypatch.setattr(bridge.core.record.orjson, "loads", counting_loads)
    view = RecordView(rec())
    assert calls == []
    assert view.get(FieldPath.parse("key")) == b"k1"
    assert view.get(FieldPath.parse("value")) == rec().value
    assert calls == []  # no value.* asked yet: nothing parsed
    assert view.get(FieldPath.parse("value.a.b")) == "deep"
    assert view.get(FieldPath.parse("value.n")) == 7
    assert view.text(FieldPath.parse("value.items.1")) == "20"
    assert len(calls) == 1


def test_non_json_value_only_fails_when_a_json_field_is_asked() -> None:
    view = RecordView(rec(value=b"plain text"))
    assert view.get(FieldPath.parse("key")) == b"k1"
    assert view.get(FieldPath.parse("value")) == b"plain text"
    assert view.text(FieldPath.parse("value")) == "plain text"
    with pytest.raises(FieldError, match=r"^the record value is not JSON \("):
        view.get(FieldPath.parse("value.a"))


@pytest.mark.parametrize(
    ("record", "path", "message"),
    [
        (rec(), "header.kind", "header 'kind' is missing"),
        (rec(), "value.zzz", "field 'value.zzz' is missing from the JSON value"),
        (rec(), "value.a.c", "field 'value.a.c' is missing from the JSON value"),
        (rec(), "value.a.b.c", "field 'value.a.b.c' is missing from the JSON value"),
        (rec(), "value.items.3", "field 'value.items.3' is missing from the JSON value"),
        (rec(), "value.items.x", "field 'value.items.x' is missing from the JSON value"),
        (rec(), "value.n.0", "field 'value.n.0' is missing from the JSON value"),
        (rec(value=None), "value", "the record has no value"),
        (
            rec(value=None),
            "value.a",
            "the record has no value (a tombstone), so it has no JSON fields",
        ),
        (rec(key=None), "key", "the record has no key"),
    ],
)
def test_field_errors(record: Record, path: str, message: str) -> None:
    with pytest.raises(FieldError) as info:
        RecordView(record).get(FieldPath.parse(path))
    assert str(info.value) == message


def test_field_error_when_value_is_not_json() -> None:
    with pytest.raises(FieldError) as info:
        get(rec(value=b"{nope"), "value.a")
    assert str(info.value).startswith("the record value is not JSON (")


def test_non_utf8_key_fails_only_as_text() -> None:
    view = RecordView(rec(key=b"\xff\xfe"))
    assert view.get(FieldPath.parse("key")) == b"\xff\xfe"
    with pytest.raises(FieldError) as info:
        view.text(FieldPath.parse("key"))
    assert str(info.value) == (
        "key is not UTF-8 text; use {key.hex} or {key.base64} for binary keys"
    )


def test_null_json_field_as_text_is_an_error() -> None:
    view = RecordView(rec(value=b'{"a": null}'))
    assert view.get(FieldPath.parse("value.a")) is None
    with pytest.raises(FieldError) as info:
        view.text(FieldPath.parse("value.a"))
    assert str(info.value) == "value.a is null"


# -- Template.parse --------------------------------------------------------------------------


def test_parse_literal_only() -> None:
    t = Template.parse("plain text")
    assert t.parts == ("plain text",)
    assert t.constant
    assert t.fields == ()
    assert t.single_field is None


def test_parse_multiple_fields() -> None:
    t = Template.parse("{topic}-{partition}-{offset}")
    assert t.parts == (
        FieldPath.parse("topic"),
        "-",
        FieldPath.parse("partition"),
        "-",
        FieldPath.parse("offset"),
    )
    assert [f.text for f in t.fields] == ["topic", "partition", "offset"]
    assert not t.constant
    assert t.single_field is None


def test_parse_strips_spaces_inside_braces() -> None:
    assert Template.parse("{ key }").parts == (FieldPath.parse("key"),)


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ("{{", ("{",)),
        ("}}", ("}",)),
        ("{{key}}", ("{key}",)),
        ("a{{b}}c", ("a{b}c",)),
        ("{{{key}}}", ("{", FieldPath.parse("key"), "}")),
        ("x{{{key}-{{", ("x{", FieldPath.parse("key"), "-{")),
    ],
)
def test_parse_brace_escapes(source: str, parts: tuple[object, ...]) -> None:
    assert Template.parse(source).parts == parts


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{", "unclosed '{' at position 0 in '{'"),
        ("ab{key", "unclosed '{' at position 2 in 'ab{key'"),
        ("a}", "single '}' at position 1 in 'a}'; write '}}'"),
        ("{key}}", "single '}' at position 5 in '{key}}'; write '}}'"),
        (
            "{nope}",
            "unknown field 'nope'; use key, topic, partition, offset, timestamp, "
            "header.NAME, value or value.a.b in template '{nope}'",
        ),
        (
            "x-{}",
            "unknown field ''; use key, topic, partition, offset, timestamp, "
            "header.NAME, value or value.a.b in template 'x-{}'",
        ),
    ],
)
def test_parse_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template.parse(source)
    assert str(info.value) == message


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


@pytest.mark.parametrize(
    ("source", "single"),
    [
        ("{value.payload}", "value.payload"),
        ("{key}", "key"),
        ("{value}", "value"),
        ("x{key}", None),
        ("{key}{key}", None),
        ("literal", None),
    ],
)
def test_single_field(source: str, single: str | None) -> None:
    found = Template.parse(source).single_field
    assert (found.text if found else None) == single


# -- render ----------------------------------------------------------------------------------


DOC = {
    "s": "str",
    "i": 12,
    "f": 1.5,
    "t": True,
    "fl": False,
    "nested": {"b": [1, "two", None], "c": {"d": 1}},
    "list": [1, 2],
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("literal", "literal"),
        ("{key}", "k1"),
        ("{topic}-{partition}-{offset}", "orders-3-42"),
        ("{timestamp}", "1700000000000"),
        ("id={value.s}!", "id=str!"),
        ("{value.i}", "12"),
        ("{value.f}", "1.5"),
        ("{value.t}/{value.fl}", "true/false"),
        ("{value.nested}", '{"b":[1,"two",null],"c":{"d":1}}'),
        ("{value.list}", "[1,2]"),
        ("{value.nested.b.1}", "two"),
        ("{header.h}", "hv"),
        ("{{{key}}}", "{k1}"),
        ("{value}", orjson.dumps(DOC).decode()),
    ],
)
def test_render(source: str, expected: str) -> None:
    record = rec(value=orjson.dumps(DOC), headers=(("h", b"hv"),))
    assert Template.parse(source).render(RecordView(record)) == expected


def test_render_missing_field_raises_field_error() -> None:
    with pytest.raises(FieldError) as info:
        Template.parse("x-{header.missing}").render(RecordView(rec()))
    assert str(info.value) == "header 'missing' is missing"


def test_render_null_field_raises() -> None:
    with pytest.raises(FieldError) as info:
        Template.parse("{value.nested.b.2}").render(RecordView(rec(value=orjson.dumps(DOC))))
    assert str(info.value) == "value.nested.b.2 is null"


# -- binary keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hex_text", "b64_text"),
    [
        (b"k1", "6b31", "azE="),
        (b"\x00\xff", "00ff", "AP8="),
        (b"\xfb\xff\xbf", "fbffbf", "+/+/"),  # the standard alphabet, not the URL-safe one
        (b"", "", ""),
    ],
)
def test_key_hex_and_base64(key: bytes, hex_text: str, b64_text: str) -> None:
    record = rec(key=key)
    assert get(record, "key.hex") == hex_text
    assert get(record, "key.base64") == b64_text
    assert Template.parse("{key.hex}/{key.base64}").render(RecordView(record)) == (
        f"{hex_text}/{b64_text}"
    )


def test_key_hex_of_a_missing_key_is_an_error() -> None:
    for path in ("key.hex", "key.base64"):
        with pytest.raises(FieldError, match=r"^the record has no key$"):
            get(rec(key=None), path)


@pytest.mark.parametrize("text", ["key.", "key.hex.x", "key.base64.y", "key.a..b"])
def test_unknown_key_forms_list_the_known_ones(text: str) -> None:
    with pytest.raises(ValueError, match=r"^unknown field ") as info:
        FieldPath.parse(text)
    assert str(info.value) == f"unknown field {text!r}; use key, key.hex, key.base64 or key.a.b"


@pytest.mark.parametrize("text", ["key.utf8", "key.Hex", "key.id", "key.a.0"])
def test_other_key_forms_are_fields_of_a_decoded_key(text: str) -> None:
    # `check` refuses them unless the route sets a key_format (tests/test_schema_config.py)
    path = FieldPath.parse(text)
    assert (path.root, path.parts, path.key_field) == ("key", tuple(text.split(".")[1:]), True)


def test_key_paths_parse() -> None:
    for text in ("key", "key.hex", "key.base64"):
        path = FieldPath.parse(text)
        assert (path.text, path.root, path.parts, path.needs_json) == (text, text, (), False)


# -- what a request may carry ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "authorization",
        "Authorization",
        "PROXY-AUTHORIZATION",
        "idempotency-key",
        "Idempotency-Expires",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "cookie",
        "x-restate-id",
        "X-Restate-Error-Source",
        "x-restate-",
    ],
)
def test_reserved_headers(name: str) -> None:
    assert reserved_header(name)


@pytest.mark.parametrize(
    "name", ["x-trace", "traceparent", "x-restate", "restate-x", "tee", "hosts"]
)
def test_headers_that_are_not_reserved(name: str) -> None:
    assert not reserved_header(name)


def test_reserved_header_list_is_lower_case() -> None:
    assert all(name == name.lower() for name in RESERVED_HEADERS)
    assert len(RESERVED_HEADERS) == 16


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("x-trace", True),
        ("X_Trace.2", True),
        ("!#$%&'*+-.^_`|~", True),
        ("", False),
        ("x trace", False),
        ("x:trace", False),
        ("x\r\ny", False),
        ("(x)", False),
        ("ü", False),
        ('x"', False),
    ],
)
def test_http_token(name: str, token: bool) -> None:
    assert http_token(name) is token


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("plain", True),
        ("a b\tc", True),
        ("~!\"#'{}", True),
        ("a\rb", False),
        ("a\nb", False),
        ("a\x00b", False),
        ("a\x1fb", False),
        ("a\x7fb", False),
        ("ünï", False),
        ("a\x85b", False),
    ],
)
def test_header_value_ok(value: str, ok: bool) -> None:
    assert header_value_ok(value) is ok


def test_excerpt_bounds_record_data_in_messages() -> None:
    assert excerpt("short") == "'short'"
    assert excerpt("x" * 40) == repr("x" * 40)
    assert excerpt("x" * 41) == repr("x" * 40) + "... (41 characters)"


def test_coordinates() -> None:
    assert rec().coordinates == "orders-3@42"


def test_json_with_integers_beyond_64_bits_is_read_exactly() -> None:
    big = 2**64 + 1
    view = RecordView(rec(value=b'{"n": %d, "list": [%d]}' % (big, -big)))
    assert view.get(FieldPath.parse("value.n")) == big
    assert view.text(FieldPath.parse("value.n")) == str(big)
    assert view.text(FieldPath.parse("value.list")) == f"[{-big}]"
    assert dump_json({"a": [big, 1.5, "ü"]}, "x") == f'{{"a":[{big},1.5,"ü"]}}'.encode()


def test_non_utf8_header_as_text_names_the_header() -> None:
    with pytest.raises(FieldError) as info:
        Template.parse("{header.h}").render(RecordView(rec(headers=(("h", b"\xff"),))))
    assert str(info.value) == "header 'h' is not UTF-8 text"
