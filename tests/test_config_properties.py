"""Property tests: any routing file either loads or fails as ``PATH:LINE: message`` lines.

Documents are built from plausible keys (every option the reader knows, a few it does not) and
wild values (any text, huge and negative integers, nan and infinities, booleans, lists, nested
tables, dates), written as TOML; random text is tried as well. Neither the reader nor
``restate-bridge check`` may raise anything else, and a file that loads must be usable by ``run``
(its combined topic regex compiles, a router can be built from it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.cli import main
from bridge.config import ROUTE_KEYS, SECTIONS, BridgeConfig, ConfigError, parse_config
from bridge.core.routing import Router

PATH = Path("routes.toml")
FILE_LINE = re.compile(r"^routes\.toml:\d+: \S")
ENV_LINE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*: \S")
ENV_NAMES = [
    "RESTATE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "BRIDGE_METRICS_LISTEN",
    "BRIDGE_LOG_LEVEL",
    "RESTATE_AUTH_TOKEN",
    "KAFKA_PASSWORD",
]


@dataclass(frozen=True)
class Raw:
    """A TOML value written as is (dates and times)."""

    text: str


PLAUSIBLE_TEXT = st.sampled_from(
    [
        "t",
        "orders",
        "orders-.*",
        "(",
        "a{4294967296}",
        "(?<=a+)b",
        "x(?i)y",
        "{key}",
        "{key",
        "{value.a.b}",
        "{header.delay}",
        "{nope}",
        "4s",
        "0s",
        "-1s",
        "1000000000d",
        "PT1e9S",
        "P99999999999999999999D",
        "service",
        "object",
        "workflow",
        "actor",
        "key",
        "partition",
        "none",
        "skip",
        "send",
        "dead_letter",
        "run",
        "Run",
        "earliest",
        "latest",
        "read_committed",
        "PLAINTEXT",
        "SSL",
        "SASL_SSL",
        "SASL_PLAINTEXT",
        "PLAIN",
        "SCRAM-SHA-256",
        "OAUTHBEARER",
        "127.0.0.1:0",
        "h:65536",
        ":1",
        "b:9092",
        "b:x",
        "http://h:8080",
        "ftp://x",
        "http://",
        "authorization",
        "x-restate-id",
        "x trace",
        "x-trace",
        "dlq",
        "KAFKA_PASSWORD",
        "",
        "  ",
        "/nonexistent/ca.pem",
        "\u2028",
        "\x00",
        "\x7f",
        "é",
        "a\nb",
    ]
)
SCALARS = st.one_of(
    PLAUSIBLE_TEXT,
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 65535, 65536, 2**31 - 1, 2**31, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from([Raw("1979-05-27T07:32:00Z"), Raw("1979-05-27"), Raw("07:32:00")]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(PLAUSIBLE_TEXT, st.text(max_size=6)), inner, max_size=3),
    ),
    max_leaves=6,
)


def table_of(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    key = st.one_of(st.sampled_from(keys), st.text(max_size=8))
    return st.dictionaries(key, VALUES, max_size=6)


SECTION_KEYS = {
    name: sorted({f for f in cls.__dataclass_fields__} | {"token", "sasl_password"})
    for name, cls in SECTIONS.items()
}
ROUTE = table_of(sorted(ROUTE_KEYS))
KNOWN_TABLES = st.fixed_dictionaries(
    {},
    optional={
        **{name: st.one_of(table_of(keys), VALUES) for name, keys in SECTION_KEYS.items()},
        "routes": st.one_of(st.lists(ROUTE, max_size=3), VALUES),
        "extra": VALUES,
    },
)
DOCUMENTS = st.builds(
    lambda known, other: {**other, **known},
    KNOWN_TABLES,
    st.dictionaries(st.text(max_size=6), VALUES, max_size=2),
)
# near-valid files: a good one with a few keys set to values that are right somewhere
GOOD_ISH = st.sampled_from(
    [
        *[
            "{key}",
            "{value.id}",
            "k-{key}",
            "key",
            "partition",
            "none",
            "skip",
            "send",
            "dead_letter",
            "4s",
            "0s",
            "100ms",
            "10s",
            "400d",
            "{header.delay}",
            "object",
            "workflow",
            "service",
            "run",
            "text/plain",
            "orders-.*",
            "t",
            "dlq",
            "earliest",
            "latest",
            "read_uncommitted",
            "SASL_SSL",
            "SASL_PLAINTEXT",
            "SSL",
            "PLAIN",
            "SCRAM-SHA-256",
            "KAFKA_PASSWORD",
            "bridge",
            "127.0.0.1:0",
            "http://restate:8080",
            "b:9092,c:9093",
        ],
        *(["x-trace"], ["authorization"], ["t", "dlq"], {"header.kind": "x"}, {"value.n": 5}),
        *(1, 5, 1000, True, False),
    ]
)
BASE_ROUTE = {"topic": "t", "target": "service", "service": "S", "handler": "h"}
NEAR_ROUTE = st.builds(
    lambda extra, drop: {**{k: v for k, v in BASE_ROUTE.items() if k not in drop}, **extra},
    st.dictionaries(st.sampled_from(sorted(ROUTE_KEYS)), GOOD_ISH, max_size=3),
    st.sets(st.sampled_from(sorted(BASE_ROUTE)), max_size=1),
)
NEAR_DOCUMENTS = st.builds(
    lambda sections, routes: {**sections, "routes": routes},
    st.fixed_dictionaries(
        {
            "kafka": st.builds(
                lambda extra: {"bootstrap_servers": "b:9092", **extra},
                st.dictionaries(st.sampled_from(SECTION_KEYS["kafka"]), GOOD_ISH, max_size=3),
            )
        },
        optional={
            name: st.dictionaries(st.sampled_from(keys), GOOD_ISH, max_size=3)
            for name, keys in SECTION_KEYS.items()
            if name != "kafka"
        },
    ),
    st.lists(NEAR_ROUTE, min_size=1, max_size=3),
)
ENVS = st.dictionaries(st.sampled_from(ENV_NAMES), st.one_of(PLAUSIBLE_TEXT, st.text(max_size=8)))


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_key(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
    return "{ " + items + " }" if items else "{}"


def toml_key(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def to_toml(doc: Mapping[str, Any]) -> str:
    """Top-level tables as ``[name]`` sections and routes as ``[[routes]]``, so that line
    numbers are exercised; anything else inline."""
    lines: list[str] = []
    for name, value in doc.items():
        if name == "routes" and isinstance(value, list) and all(isinstance(r, dict) for r in value):
            for item in value:
                lines += [
                    "",
                    "[[routes]]",
                    *(f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items()),
                ]
        elif isinstance(value, dict):
            lines += [
                "",
                f"[{toml_key(name)}]",
                *(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()),
            ]
        else:
            lines.insert(0, f"{toml_key(name)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def load(text: str, env: Mapping[str, str]) -> BridgeConfig | list[str]:
    """The config, or the problems' lines."""
    try:
        return parse_config(text, PATH, env)
    except ConfigError as exc:
        return str(exc).split("\n")


def assert_loads_or_reports(text: str, env: Mapping[str, str]) -> BridgeConfig | None:
    config = load(text, env)
    if isinstance(config, list):
        assert config
        for line in config:
            assert FILE_LINE.match(line) or ENV_LINE.match(line), line
        return None
    # a file check accepts is one run can start with
    if config.topic_pattern is not None:
        re.compile(config.topic_pattern)
    Router(config)
    host, port = config.metrics.host_port
    assert host
    assert 0 <= port <= 65535
    return config


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCUMENTS, env=ENVS)
def test_random_documents_load_or_report_lines(doc: dict[str, Any], env: dict[str, str]) -> None:
    assert_loads_or_reports(to_toml(doc), env)


@settings(max_examples=120, deadline=None)
@given(doc=DOCUMENTS)
def test_random_documents_without_environment_report_only_file_lines(doc: dict[str, Any]) -> None:
    """Every problem names its line; or, for a ``*_env`` key naming a variable that is unset
    (the environment is empty here), that variable."""
    config = load(to_toml(doc), {})
    if isinstance(config, list):
        for line in config:
            assert FILE_LINE.match(line) or (
                ENV_LINE.match(line) and "unset or empty, but [" in line
            ), config


@settings(max_examples=150, deadline=None)
@given(doc=NEAR_DOCUMENTS, env=ENVS)
def test_near_valid_documents_load_or_report_lines(
    doc: dict[str, Any], env: dict[str, str]
) -> None:
    assert_loads_or_reports(to_toml(doc), env)


GOOD_ROUTE = '[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'


@settings(max_examples=120, deadline=None)
@given(route=st.one_of(ROUTE, NEAR_ROUTE))
def test_random_routes_next_to_a_good_file(route: dict[str, Any]) -> None:
    text = '[kafka]\nbootstrap_servers = "b:9092"\n\n' + to_toml({"routes": [route]})
    assert_loads_or_reports(text, {})
    assert_loads_or_reports(text + "\n" + GOOD_ROUTE, {})


@settings(max_examples=120, deadline=None)
@given(text=st.text(max_size=300))
def test_random_text(text: str) -> None:
    assert_loads_or_reports(text, {})


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=st.one_of(DOCUMENTS, NEAR_DOCUMENTS), raw=st.binary(max_size=40))
def test_check_exits_0_or_2_and_never_raises(
    doc: dict[str, Any],
    raw: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "routes.toml"
    for content in (to_toml(doc).encode(), raw, to_toml(doc).encode() + raw):
        path.write_bytes(content)
        code = main(["check", str(path)])
        out, err = capsys.readouterr()
        assert code in (0, 2)
        if code == 2:
            assert out == ""
            assert err
            assert "Traceback" not in err
            for line in err.splitlines():
                assert line.startswith(f"{path}:") or ENV_LINE.match(line), line
