"""Routes reading framed keys and values: templates, matches and bodies over decoded data, the
dead-letter reasons of undecodable records, and what `check` refuses."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge.config import ConfigError, parse_config
from bridge.core.record import Decoded, Record
from bridge.core.routing import Invocation, Poison, Router

HEAD = '[kafka]\nbootstrap_servers = "b:9092"\n[schema_registry]\nurl = "http://registry:8081"\n'


def router(route: str, head: str = HEAD) -> Router:
    return Router(parse_config(head + route, Path("routes.toml"), {}))


def route(extra: str) -> str:
    return (
        '[[routes]]\ntopic = "t"\ntarget = "object"\nservice = "Recorder"\nhandler = "record"\n'
        + extra
    )


def rec(
    value: Decoded | None, key: Decoded | None = None, raw_key: bytes | None = b"\0k"
) -> Record:
    return Record("t", 0, 7, 0, raw_key, b"\0framed", (), key, value)


ORDER = Decoded("AVRO", 3, {"id": "o-1", "customer": {"id": "c-9"}, "n": 2**70, "kind": "NEW"})


def test_templates_matches_and_body_read_the_decoded_value() -> None:
    r = router(
        route(
            'value_format = "avro"\nkey = "{value.customer.id}"\nmatch = { "value.kind" = "NEW" }\n'
        )
    )
    (inv,) = r.plan(rec(ORDER))
    assert isinstance(inv, Invocation)
    assert inv.key == "c-9"
    assert (
        inv.body == b'{"id":"o-1","customer":{"id":"c-9"},"n":1180591620717411303424,"kind":"NEW"}'
    )
    assert inv.content_type == "application/json"
    assert r.plan(rec(Decoded("AVRO", 3, {**ORDER.data, "kind": "OLD"}))) == []
    (sub,) = router(route('value_format = "avro"\nkey = "x"\nbody = "{value.customer}"\n')).plan(
        rec(ORDER)
    )
    assert isinstance(sub, Invocation)
    assert orjson.loads(sub.body or b"") == {"id": "c-9"}


def test_a_decoded_key_is_addressed_as_key_and_key_fields() -> None:
    r = router(route('value_format = "avro"\nkey_format = "avro"\nkey = "{key.tenant}/{key.id}"\n'))
    (inv,) = r.plan(rec(ORDER, Decoded("AVRO", 4, {"tenant": "t1", "id": 42})))
    assert isinstance(inv, Invocation)
    assert inv.key == "t1/42"
    whole = router(route('key_format = "avro"\nvalue_format = "avro"\nkey = "{key}"\n'))
    (prim,) = whole.plan(rec(ORDER, Decoded("AVRO", 5, "plain-key")))
    assert isinstance(prim, Invocation)
    assert prim.key == "plain-key"
    (rec_key,) = whole.plan(rec(ORDER, Decoded("AVRO", 4, {"id": 42})))
    assert isinstance(rec_key, Invocation)
    assert rec_key.key == '{"id":42}'
    hexed = router(route('key_format = "avro"\nvalue_format = "avro"\nkey = "{key.hex}"\n'))
    (raw,) = hexed.plan(rec(ORDER, Decoded("AVRO", 5, "plain-key")))
    assert isinstance(raw, Invocation)
    assert raw.key == "006b"  # key.hex stays the raw bytes


def test_a_json_key_format_parses_the_key() -> None:
    r = router(route('key_format = "json"\nkey = "{key.user}"\n'))
    (inv,) = r.plan(Record("t", 0, 0, 0, b'{"user": "u7"}', b"{}"))
    assert isinstance(inv, Invocation)
    assert inv.key == "u7"
    (bad,) = r.plan(Record("t", 0, 0, 0, b"not json", b"{}"))
    assert isinstance(bad, Poison)
    assert bad.reason.startswith("the record key is not JSON")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (Decoded(error="no magic byte: the first byte is 0x7b"), "value: no magic byte: the first"),
        (
            Decoded(schema_id=9, error="schema id 9 is not in the schema registry"),
            "value: schema id 9 is not in the schema registry",
        ),
        (
            Decoded("AVRO", 3, error="does not match its avro schema (id 3): EOFError"),
            "value: does not match its avro schema (id 3): EOFError",
        ),
        (
            Decoded("PROTOBUF", 8, {"a": 1}),
            "value: written with a PROTOBUF schema (id 8), but the route says value_format = "
            "'avro'",
        ),
    ],
)
def test_undecodable_values_are_poison_naming_the_field(value: Decoded, reason: str) -> None:
    # also for a route that reads nothing of the value: it said the value is Avro
    r = router(route('value_format = "avro"\nkey = "fixed"\nbody = "none"\n'))
    (planned,) = r.plan(rec(value))
    assert isinstance(planned, Poison)
    assert planned.reason.startswith(reason)


def test_an_undecodable_key_is_poison_even_in_a_match() -> None:
    r = router(route('key_format = "avro"\nkey = "k"\nmatch = { "key.kind" = "a" }\n'))
    (planned,) = r.plan(Record("t", 0, 0, 0, b"plain", b"{}", (), Decoded(error="no magic byte")))
    assert isinstance(planned, Poison)
    assert planned.reason == "key: no magic byte"


def test_a_tombstone_keeps_its_on_null_policy() -> None:
    r = router(route('value_format = "avro"\nkey = "k"\non_null = "skip"\n'))
    assert [type(p).__name__ for p in r.plan(Record("t", 0, 0, 0, b"k", None))] == ["Skip"]
    sent = router(route('value_format = "avro"\nkey = "k"\n'))
    (inv,) = sent.plan(Record("t", 0, 0, 0, b"k", None))
    assert isinstance(inv, Invocation)
    assert inv.body is None


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("routes.toml"), env or {})
    return info.value.problems


def test_check_refuses_a_framed_format_without_a_registry() -> None:
    text = '[kafka]\nbootstrap_servers = "b:9092"\n' + route('value_format = "avro"\nkey = "k"\n')
    assert problems(text) == [
        "routes.toml:8: value_format = 'avro' needs a schema registry: add [schema_registry] url"
    ]


def test_check_refuses_a_framed_format_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bridge.schemas.missing_extra", lambda: "fastavro, protobuf")
    assert problems(HEAD + route('key_format = "protobuf"\nkey = "{key}"\n')) == [
        "routes.toml:10: key_format = 'protobuf' needs fastavro, protobuf, which is not "
        "installed: pip install 'restate-kafka-bridge[schemas]'"
    ]


def test_check_refuses_key_fields_of_a_raw_key_and_value_fields_of_raw_values() -> None:
    assert problems(HEAD + route('key = "{key.id}"\n')) == [
        "routes.toml:10: 'key.id' reads a field of the key, but key_format is 'raw'; set "
        "key_format (json, avro, protobuf or json_schema)"
    ]
    assert problems(HEAD + route('value_format = "raw"\nkey = "{value.id}"\n')) == [
        "routes.toml:11: 'value.id' reads a field of the value, but value_format is 'raw'"
    ]
    assert problems(HEAD + route('value_format = "xml"\nkey = "k"\n')) == [
        "routes.toml:10: value_format must be one of json, avro, protobuf, json_schema, raw, "
        "not 'xml'"
    ]


def test_registry_credentials_are_checked_and_resolved(tmp_path: Path) -> None:
    base = '[kafka]\nbootstrap_servers = "b:9092"\n'
    r = route('value_format = "avro"\nkey = "k"\n')
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    ok = parse_config(
        base
        + f'[schema_registry]\nurl = "https://r"\nusername = "u"\npassword_file = "{secret}"\n'
        + r,
        Path("routes.toml"),
        {},
    )
    assert (ok.schema_registry.username, ok.schema_registry.password) == ("u", "s3cret")
    assert "s3cret" not in repr(ok)
    bearer = parse_config(
        base + '[schema_registry]\nurl = "http://r"\ntoken_env = "REG_TOKEN"\n' + r,
        Path("routes.toml"),
        {"REG_TOKEN": "t0k"},
    )
    assert bearer.schema_registry.token == "t0k"
    assert problems(
        base + '[schema_registry]\nurl = "http://r"\ntoken_env = "REG_TOKEN"\n' + r
    ) == [
        "$REG_TOKEN: unset or empty, but [schema_registry] token_env names it as the bearer token"
    ]
    assert problems(
        base + '[schema_registry]\nurl = "http://r"\nusername = "u"\ntoken_env = "T"\n' + r,
        {"T": "x"},
    ) == [
        "routes.toml:5: username needs password_env or password_file",
        "routes.toml:6: use either basic authentication (username) or a bearer token, not both",
    ]
    assert problems(base + '[schema_registry]\nurl = "ftp://r"\n' + r) == [
        "routes.toml:4: url must start with http:// or https://"
    ]
    assert problems(base + '[schema_registry]\nurl = "http://r"\nca_file = "/nope"\n' + r) == [
        "routes.toml:5: ca_file is only used with an https:// url"
    ]
    assert problems(base + '[schema_registry]\nusername = "u"\n' + r) == [
        "routes.toml:4: username is only used with [schema_registry] url",
        "routes.toml:10: value_format = 'avro' needs a schema registry: add [schema_registry] url",
    ]
