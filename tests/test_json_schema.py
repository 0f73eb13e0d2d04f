"""``routes.schema.json``: current with the code, met by every routing file the loader accepts,
failed by unknown keys, wrong types, bad choices and out-of-range integers, and in agreement with
the loader wherever a schema can say the rule."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import cli
from bridge.config.schema import ROUTE_KEYS
from bridge.core.durations import DurationError, DurationTooLong, parse_duration
from bridge.reference.json_schema import schema_text
from bridge.reference.options import CHECK_SCHEMAS, DURATION_PATTERN, tables
from tests.routing_schema import (
    SCHEMA_FILE,
    loader_problems,
    routing_files,
    schema_problems,
    validate_routing_toml,
    validator,
)

REGENERATE = "python -m bridge.reference (or: restate-bridge schema > routes.schema.json)"


def test_the_shipped_schema_is_what_restate_bridge_schema_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == schema_text()
    assert SCHEMA_FILE.read_text(encoding="utf-8") == printed, (
        f"routes.schema.json is stale; regenerate it: {REGENERATE}"
    )


def test_an_excerpt_is_validated_without_the_tables_a_file_needs() -> None:
    excerpt = ROUTE.replace('"object"', '"service"').replace('key = "{key}"\n', "")
    assert validate_routing_toml(excerpt) == ["(top): 'kafka' is a required property"]
    assert validate_routing_toml(excerpt, whole=False) == []
    assert validate_routing_toml(excerpt + "colour = 1\n", whole=False) != []


def test_the_schema_is_a_draft_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator()  # check_schema raises for a schema the metaschema refuses


def test_routes_toml_names_the_schema_on_its_first_line() -> None:
    first = routing_files()["routes.toml"].splitlines()[0]
    assert first == "#:schema ./routes.schema.json"


def test_the_shipped_routing_files_validate() -> None:
    """``routes.toml`` and the Helm chart's values, whether or not their files exist here."""
    shipped = {k: v for k, v in routing_files().items() if k == "routes.toml" or "deploy/" in k}
    assert len(shipped) >= 3
    wrong = [f"{k}: {p}" for k, text in shipped.items() for p in validate_routing_toml(text)]
    assert not wrong, "\n".join(wrong)


def test_every_routing_file_the_loader_accepts_validates() -> None:
    accepted, wrong = 0, []
    for where, text in routing_files().items():
        if loader_problems(text):
            continue  # a file a test writes to be refused, or that names files absent here
        accepted += 1
        wrong += [f"{where}: {problem}" for problem in validate_routing_toml(text)]
    assert not wrong, "\n".join(wrong)
    assert accepted >= 15, "the routing files were not found"


# -- files the schema fails -----------------------------------------------------------------------

BASE = '[kafka]\nbootstrap_servers = "kafka:9092"\n'
ROUTE = '[[routes]]\ntopic = "t"\ntarget = "object"\nservice = "S"\nhandler = "h"\nkey = "{key}"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "bogus = 1\n" + ROUTE, "'bogus' was unexpected"),
        (BASE + "[extra]\na = 1\n" + ROUTE, "'extra' was unexpected"),
        (BASE + ROUTE + "colour = 'red'\n", "'colour' was unexpected"),
        (BASE + ROUTE + "batch = { max_records = 5, size = 1 }\n", "'size' was unexpected"),
        (BASE + "group_id = 5\n" + ROUTE, "5 is not of type 'string'"),
        (BASE + "[delivery]\nmax_in_flight = '10'\n" + ROUTE, "'10' is not of type 'integer'"),
        (BASE + "[tracing]\nspans = 'yes'\n" + ROUTE, "'yes' is not of type 'boolean'"),
        (BASE + "[delivery]\ncommit_interval = 5\n" + ROUTE, "5 is not of type 'string'"),
        (BASE + "auto_offset_reset = 'newest'\n" + ROUTE, "'newest' is not one of"),
        (BASE + ROUTE + "on_null = 'drop'\n", "'drop' is not one of"),
        (BASE + ROUTE.replace('"object"', '"actor"'), "'actor' is not one of"),
        (BASE + "session_timeout_ms = 999\n" + ROUTE, "999 is less than the minimum of 1000"),
        (BASE + "[delivery]\nmax_in_flight = 0\n" + ROUTE, "0 is less than the minimum of 1"),
        (BASE + "fetch_max_bytes = 2147483648\n" + ROUTE, "is greater than the maximum"),
        (BASE + ROUTE + "retry_on = [302]\n", "302 is not valid under any of the given schemas"),
        (BASE + ROUTE + "batch = { max_records = 10001 }\n", "is greater than the maximum"),
        (BASE + "[delivery]\ndrain_timeout = '30 seconds'\n" + ROUTE, "does not match"),
    ],
)
def test_a_file_with_a_wrong_key_or_value_fails(text: str, expected: str) -> None:
    problems = validate_routing_toml(text)
    assert any(expected in p for p in problems), problems
    assert loader_problems(text), "the loader accepts what the schema refuses"


# -- the schema and the loader agree --------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"


def dump(document: dict[str, Any]) -> str:
    """A routing document as TOML: tables, then ``[[routes]]``."""
    lines = [f"{json.dumps(k)} = {_toml(v)}" for k, v in document.items() if k not in TABLES]
    for name, table in document.items():
        if name == "routes":
            for route in table:
                lines.append("[[routes]]")
                lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in route.items()]
        elif name in TABLES:
            lines.append(f"[{name}]")
            lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


TABLES = {t.name for t in tables()}
BASE_DOC: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "kafka:9092"},
    "routes": [{"topic": "t", "target": "object", "service": "S", "handler": "h", "key": "{k}"}],
}
WRONG_TYPE: dict[str, Any] = {
    "string": 12345,
    "string or array of strings": 12345,
    "integer": "12",
    "boolean": "yes",
    "duration": 5,
    "number": "5",
    "array of strings": "x",
    "array of statuses": 409,
    "inline table": "x",
    "template": 5,
    'template or `"none"`': 5,
    "duration or template": 5,
    "string (regex)": 5,
}
MORE: list[tuple[str, str, Any, str]] = [
    # (table, key, value, kind) beyond what the model's types and ranges give
    ("routes", "retry_on", [399], "range"),
    ("routes", "retry_on", [600], "range"),
    ("routes", "dead_letter_on", ["3xx"], "type"),
    ("routes", "block_on", ["abc"], "type"),
    ("routes", "retry_on", [True], "type"),
    ("routes", "retry_on", [409, "5XX", " 400 - 404 "], "valid"),
    ("routes", "rate_limit", 0.0001, "range"),
    ("routes", "rate_limit", 2_000_000, "range"),
    ("routes", "rate_limit", 0.5, "valid"),
    ("routes", "batch", {"max_records": 0}, "range"),
    ("routes", "batch", {"max_bytes": 1023}, "range"),
    ("routes", "batch", {"max_bytes": 64 * 1024 * 1024 + 1}, "range"),
    ("routes", "batch", {"max_bytes": "5 GB"}, "type"),
    ("routes", "batch", {"max_wait": "4x"}, "type"),
    ("routes", "batch", {"max_records": 5, "max_bytes": "64 KiB", "max_wait": "1s"}, "valid"),
    ("routes", "topics", [], "type"),
    ("routes", "topics", ["a", ""], "type"),
    ("routes", "topic", "bad topic", "type"),
    ("routes", "headers", ["x-trace", "bad header"], "type"),
    ("routes", "match", {"header.kind": [1]}, "type"),
    ("routes", "delay", "soon", "type"),
    ("routes", "delay", "{header.delay}", "valid"),
    ("kafka", "bootstrap_servers", [], "type"),
    ("kafka", "bootstrap_servers", ["a:1", 2], "type"),
    ("kafka", "bootstrap_servers", ["a:1", "b:2"], "valid"),
    ("restate", "ingress_url", ["http://a:8080", "http://b:8080"], "valid"),
    ("kafka", "sasl_password_env", "1BAD", "type"),
    ("restate", "token_env", "GOOD_NAME", "valid"),
    ("routes", "reply_correlation_header", "has space", "type"),
    ("routes", "reply_correlation_header", "Bridge.id", "type"),
    ("routes", "reply_correlation_header", "correlation-id", "valid"),
    ("routes", "content_type", "text/plain\u0001", "type"),
    ("routes", "topic", "..", "type"),
    ("metrics", "listen", ":80", "type"),
    ("metrics", "listen", "[]:80", "type"),
    ("metrics", "listen", "0.0.0.0:65536", "range"),
    ("metrics", "listen", "[::1]:0", "valid"),
    ("metrics", "listen", "0.0.0.0:00080", "valid"),
    ("restate", "ingress_url", "ftp://x", "type"),
    ("restate", "ingress_url", "http://a,,http://b", "type"),
    ("restate", "ingress_url", "http://a, http://b", "valid"),
    ("restate", "ingress_url", ["http://a,http://b", "http://c"], "valid"),
    ("schema_registry", "url", "registry:8081", "type"),
    ("schema_registry", "url", "https://registry:8081", "valid"),
]
COMPANIONS: dict[str, dict[str, Any]] = {
    # keys that go only with another: set it too, so the variant tests the value itself
    "reply_correlation_header": {"reply_topic": "replies"},
    "reply_timeout": {"reply_topic": "replies"},
    "rate_limit_burst": {"rate_limit": 5},
    "limit_key": {"scope": "tenant"},
    "on_record_too_old": {"max_record_age": "1h"},
}


def variants() -> list[tuple[str, str, Any, str]]:
    """``(table, key, value, kind)``: kind ``type``, ``enum``, ``range`` or ``unknown`` for a
    value the loader refuses by a rule the schema can say, ``valid`` for one it may accept."""
    found: list[tuple[str, str, Any, str]] = []
    for table in tables():
        found.append((table.name, "no_such_key", 1, "unknown"))
        for option in table.options:
            found.append((table.name, option.key, WRONG_TYPE[option.type], "type"))
            schema = option.schema
            if "enum" in schema:
                found.append((table.name, option.key, "no-such-choice", "enum"))
                found += [(table.name, option.key, choice, "valid") for choice in schema["enum"]]
            if schema.get("type") == "integer":
                low, high = schema["minimum"], schema["maximum"]
                found += [(table.name, option.key, low - 1, "range")]
                found += [(table.name, option.key, high + 1, "range")]
                found += [(table.name, option.key, v, "valid") for v in (low, high)]
            if schema.get("type") == "boolean":
                found += [(table.name, option.key, v, "valid") for v in (True, False)]
            if option.type == "duration":
                found += [(table.name, option.key, v, "valid") for v in ("4s", "PT2S", "1h30m")]
    return found + MORE


def _document(table: str, key: str, value: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(BASE_DOC))
    if table == "routes":
        document["routes"][0].update(COMPANIONS.get(key, {}))
        document["routes"][0][key] = value
    else:
        document.setdefault(table, {})[key] = value
    return document


@pytest.mark.parametrize(
    ("table", "key", "value", "kind"),
    variants(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_the_schema_and_the_loader_agree(table: str, key: str, value: Any, kind: str) -> None:
    document = _document(table, key, value)
    text = dump(document)
    loaded = not loader_problems(text)
    valid = not schema_problems(document)
    if kind == "valid":
        assert valid or not loaded, f"the loader accepts, the schema refuses:\n{text}"
    else:
        assert not loaded, f"a {kind} problem the loader accepts:\n{text}"
        assert not valid, f"a {kind} problem only the loader finds:\n{text}"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(variants()), min_size=1, max_size=6))
def test_the_schema_and_the_loader_agree_on_files_with_several_changes(
    changes: list[tuple[str, str, Any, str]],
) -> None:
    document = json.loads(json.dumps(BASE_DOC))
    last = {(table, key): (value, kind) for table, key, value, kind in changes}
    for (table, key), (value, _) in last.items():
        place = document["routes"][0] if table == "routes" else document.setdefault(table, {})
        if table == "routes":  # a companion never replaces a value the example chose
            companions = COMPANIONS.get(key, {}).items()
            place.update({k: v for k, v in companions if ("routes", k) not in last})
        place[key] = value
    text = dump(document)
    loaded = not loader_problems(text)
    valid = not schema_problems(document)
    assert valid or not loaded, f"the loader accepts, the schema refuses:\n{text}"
    if any(kind != "valid" for _, kind in last.values()):  # refused by a rule the schema says
        assert not valid, f"a problem only the loader finds:\n{text}"


def test_the_variants_cover_every_route_key() -> None:
    covered = {key for table, key, _, _ in variants() if table == "routes"}
    assert covered >= ROUTE_KEYS


# -- what a schema says of a Check rule is never stricter than the rule ----------------------------


TOKENS = [*"ab0159:/.,[]-_ \tB", "http://", "https://", "bridge.", "65535", "65536", "0"]


@pytest.mark.parametrize("rule", list(CHECK_SCHEMAS), ids=lambda rule: rule.__name__)
def test_a_check_rules_schema_accepts_whatever_the_rule_accepts(rule: Any) -> None:
    schema = jsonschema.Draft202012Validator({"type": "string", **CHECK_SCHEMAS[rule]})
    pick = random.Random(rule.__name__).choice  # the same texts on every run
    texts = {"".join(pick(TOKENS) for _ in range(pick(range(1, 7)))) for _ in range(20_000)}
    accepted = [text for text in texts if rule(text) is None]
    assert accepted, "no text the rule accepts was tried"
    refused = [text for text in accepted if not schema.is_valid(text)]
    assert not refused, f"{rule.__name__} accepts what the schema refuses: {refused[:5]}"


# -- durations: the pattern is the parser's grammar -----------------------------------------------

DURATION_TEXT = st.text(alphabet="0123456789.smhdPTpt \t", max_size=10)


@settings(max_examples=500, deadline=None)
@given(DURATION_TEXT)
def test_the_duration_pattern_is_the_parsers_grammar(text: str) -> None:
    schema_says = validator().is_valid(
        {"kafka": {"bootstrap_servers": "k"}, "routes": [], "delivery": {"drain_timeout": text}}
    )
    try:
        read = parse_duration(text)
    except DurationTooLong:
        return  # well-formed, beyond any bound: a range, which the schema does not say
    except DurationError:
        assert not schema_says, f"the schema accepts {text!r}, the parser refuses it"
        return
    assert schema_says, f"the parser reads {text!r} as {read}, the schema refuses it"


@pytest.mark.parametrize(
    "text",
    [
        "4s",
        "500ms",
        "1h30m",
        "2.5s",
        "PT2S",
        "pt2s",
        "P1DT1.5H",
        " 4 s ",
        "1 0s",
        "1m s",
        "\u0664s",
    ],
)
def test_durations_the_loader_reads_match_the_pattern(text: str) -> None:
    parse_duration(text)
    assert validator().is_valid(
        {"kafka": {"bootstrap_servers": "k"}, "routes": [], "delivery": {"drain_timeout": text}}
    ), DURATION_PATTERN
