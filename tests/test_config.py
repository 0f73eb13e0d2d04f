"""bridge.config: the contract example, defaults, and errors reported as ``PATH:LINE: message``."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.config import (
    DEFAULT_IDEMPOTENCY_KEY,
    Body,
    BridgeConfig,
    ConfigError,
    DeliveryConfig,
    KafkaConfig,
    MetricsConfig,
    RestateConfig,
    load_config,
    parse_config,
)
from bridge.core.record import FieldPath
from bridge.core.template import Template

CONTRACT = """\
[kafka]
bootstrap_servers = "127.0.0.1:9092"
group_id = "restate-bridge"
auto_offset_reset = "earliest"        # or "latest"

[restate]
ingress_url = "http://127.0.0.1:8080" # RESTATE_URL overrides; token from RESTATE_AUTH_TOKEN

[metrics]
listen = "127.0.0.1:9464"             # /metrics, /healthz (alive), /readyz (connected to Kafka and Restate)

[dead_letter]
topic = "restate-bridge.dlq"

[[routes]]
name = "ledger"                       # optional, unique; used in metrics and dead-letter headers
topic = "ledger"                      # or topics = [...], or topic_pattern = "regex"
target = "object"                     # "service" | "object" | "workflow"
service = "Ledger"                    # the Restate service / object / workflow name
handler = "append"
key = "{key}"                         # object key or workflow id; required for object and workflow
match = { "header.kind" = "credit" }  # optional; every entry must equal; "key", "header.NAME", "value.a.b"
delay = "4s"                          # optional; a duration, or a template such as "{header.delay}"
headers = ["x-trace"]                 # optional; Kafka headers forwarded as HTTP headers to the handler
# idempotency_key = "{topic}-{partition}-{offset}"   # default must be unique per record and route
# body = "{value}"                                   # default: the record value as-is; "{value.payload}" sends a JSON sub-document; "none" sends no body
"""  # noqa: E501

PATH = Path("routes.toml")
KAFKA = '[kafka]\nbootstrap_servers = "b:9092"\n'


def parse(text: str, env: dict[str, str] | None = None) -> BridgeConfig:
    return parse_config(text, PATH, env or {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def route(body: str, *, target: str = "service", handler: str = "h") -> str:
    """The kafka table (lines 1-2), a blank line 3, ``[[routes]]`` at line 4, then topic (5),
    target (6), service (7), handler (8) and ``body`` from line 9 on."""
    return (
        f'{KAFKA}\n[[routes]]\ntopic = "t"\ntarget = "{target}"\nservice = "S"\n'
        f'handler = "{handler}"\n{body}'
    )


# -- the contract example --------------------------------------------------------------------


def test_contract_example_loads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(CONTRACT, encoding="utf-8")
    config = load_config(path, {})
    assert config.path == path
    assert config.kafka == KafkaConfig(
        bootstrap_servers="127.0.0.1:9092", group_id="restate-bridge", auto_offset_reset="earliest"
    )
    assert config.restate == RestateConfig(ingress_url="http://127.0.0.1:8080")
    assert config.metrics == MetricsConfig(listen="127.0.0.1:9464")
    assert config.metrics.host_port == ("127.0.0.1", 9464)
    assert config.dead_letter.topic == "restate-bridge.dlq"
    assert config.delivery == DeliveryConfig()
    assert config.topics == ("ledger",)
    assert config.topic_pattern is None

    (r,) = config.routes
    assert r.name == "ledger"
    assert r.line == 15
    assert r.topics == ("ledger",)
    assert r.topic_pattern is None
    assert r.target == "object"
    assert r.service == "Ledger"
    assert r.handler == "append"
    assert r.key == Template.parse("{key}")
    assert [(m.field, m.expected) for m in r.match] == [(FieldPath.parse("header.kind"), "credit")]
    assert r.delay == timedelta(seconds=4)
    assert r.headers == ("x-trace",)
    assert r.idempotency_key == Template.parse("{topic}-{partition}-{offset}")
    assert r.body == Body("value")
    assert r.content_type == "application/json"
    assert r.ordering == "key"
    assert r.max_in_flight is None
    assert r.matches_topic("ledger")
    assert not r.matches_topic("ledger2")


def test_restate_url_env_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(CONTRACT, encoding="utf-8")
    assert load_config(path).restate.ingress_url == "http://127.0.0.1:8080"
    env = {"RESTATE_URL": "https://restate.example:9070"}
    assert load_config(path, env).restate.ingress_url == "https://restate.example:9070"
    assert load_config(str(path), {"OTHER": "x"}).restate.ingress_url == "http://127.0.0.1:8080"


def test_bad_restate_url_from_env_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse(CONTRACT, {"RESTATE_URL": "ftp://x"})
    assert info.value.problems == ["$RESTATE_URL: ingress_url must start with http:// or https://"]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, {})
    assert info.value.problems == [f"{missing}: no such file"]


# -- topics ----------------------------------------------------------------------------------


def test_topics_list_and_pattern() -> None:
    text = (
        f'{KAFKA}\n[[routes]]\ntopics = ["a", "b.c"]\ntarget = "service"\nservice = "S"\n'
        'handler = "h"\n\n[[routes]]\ntopic_pattern = "orders-.*"\ntarget = "service"\n'
        'service = "S"\nhandler = "h2"\n\n[[routes]]\ntopic = "a"\ntarget = "service"\n'
        'service = "S"\nhandler = "h3"\n'
    )
    config = parse(text)
    listed, patterned, single = config.routes
    assert listed.topics == ("a", "b.c")
    assert listed.matches_topic("b.c")
    assert not listed.matches_topic("bxc")
    assert patterned.topics == ()
    assert patterned.topic_pattern is not None
    assert patterned.topic_pattern.pattern == "orders-.*"
    assert patterned.matches_topic("orders-eu")
    assert not patterned.matches_topic("xorders-eu")  # full match, not search
    assert single.topics == ("a",)
    assert config.topics == ("a", "b.c")  # deduplicated, in order
    combined = config.topic_pattern
    assert combined == r"^(?:(?:orders-.*)|(?:a)|(?:b\.c))$"
    assert re.match(combined, "orders-1")
    assert re.match(combined, "b.c")
    assert not re.match(combined, "bxc")
    assert not re.match(combined, "a2")


def test_route_needs_exactly_one_topic_source() -> None:
    none = f'{KAFKA}\n[[routes]]\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
    assert problems(none) == [
        "routes.toml:4: a route needs exactly one of topic, topics or topic_pattern"
    ]
    both = route('topics = ["u"]\n')
    assert problems(both) == [
        "routes.toml:4: a route needs exactly one of topic, topics or topic_pattern"
    ]


def test_empty_topics_list() -> None:
    text = f'{KAFKA}\n[[routes]]\ntopics = []\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
    assert problems(text) == ["routes.toml:5: topics must be a non-empty list of topic names"]


# -- defaults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "extra", "ordering"),
    [
        ("service", "", "none"),
        ("object", 'key = "{key}"\n', "key"),
        ("workflow", 'key = "{key}"\n', "key"),
        ("service", 'ordering = "partition"\n', "partition"),
        ("object", 'key = "{key}"\nordering = "none"\n', "none"),
    ],
)
def test_ordering_defaults(target: str, extra: str, ordering: str) -> None:
    (r,) = parse(route(extra, target=target, handler="approve")).routes
    assert r.ordering == ordering


def test_service_with_key_ordering_is_refused() -> None:
    assert problems(route('ordering = "key"\n')) == [
        "routes.toml:9: a service has no key: use 'partition' or 'none'"
    ]


def test_default_name_and_idempotency_key() -> None:
    (r,) = parse(route("")).routes
    assert r.name == "S.h"
    assert r.line == 4
    assert r.key is None
    assert r.idempotency_key == Template.parse(DEFAULT_IDEMPOTENCY_KEY)
    assert DEFAULT_IDEMPOTENCY_KEY == "{topic}-{partition}-{offset}"
    assert r.delay is None
    assert r.match == ()
    assert r.headers == ()


def test_idempotency_key_none_disables_it() -> None:
    (r,) = parse(route('idempotency_key = "none"\n')).routes
    assert r.idempotency_key is None


@pytest.mark.parametrize("handler", ["run", "Run"])
def test_workflow_main_handler_has_no_idempotency_key(handler: str) -> None:
    (r,) = parse(route('key = "{key}"\n', target="workflow", handler=handler)).routes
    assert r.idempotency_key is None
    assert r.key == Template.parse("{key}")


def test_workflow_shared_handler_gets_the_default_idempotency_key() -> None:
    (r,) = parse(route('key = "{value.id}"\n', target="workflow", handler="approve")).routes
    assert r.idempotency_key == Template.parse(DEFAULT_IDEMPOTENCY_KEY)


def test_workflow_main_flag_overrides_the_handler_name() -> None:
    text = route('key = "{key}"\nworkflow_main = true\n', target="workflow", handler="start")
    (r,) = parse(text).routes
    assert r.idempotency_key is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", Body("value")),
        ('body = "{value}"\n', Body("value")),
        ('body = "none"\n', Body("none")),
        ('body = "{value.payload}"\n', Body("json_field", Template.parse("{value.payload}"))),
        ('body = "order {key}"\n', Body("template", Template.parse("order {key}"))),
        ('body = "{key}"\n', Body("template", Template.parse("{key}"))),
    ],
)
def test_body_kinds(body: str, expected: Body) -> None:
    (r,) = parse(route(body)).routes
    assert r.body == expected


def test_match_values_keep_their_types() -> None:
    text = route('match = { "key" = "k", "value.n" = 5, "value.f" = 1.5, "value.ok" = true }\n')
    (r,) = parse(text).routes
    assert [(m.field.text, m.expected) for m in r.match] == [
        ("key", "k"),
        ("value.n", 5),
        ("value.f", 1.5),
        ("value.ok", True),
    ]
    assert isinstance(r.match[3].expected, bool)


def test_delay_template_and_durations() -> None:
    (r,) = parse(route('delay = "{header.delay}"\n')).routes
    assert r.delay == Template.parse("{header.delay}")
    (r,) = parse(route('delay = "PT1M30S"\n')).routes
    assert r.delay == timedelta(seconds=90)


def test_delivery_and_kafka_options() -> None:
    text = (
        '[kafka]\nbootstrap_servers = ["a:1", "b:2"]\ngroup_id = "g"\n'
        'auto_offset_reset = "latest"\n'
        'session_timeout_ms = 6000\n\n[delivery]\nmax_in_flight = 8\ncommit_interval = "250ms"\n'
        + route("")[len(KAFKA) :]
    )
    config = parse(text)
    assert config.kafka.bootstrap_servers == "a:1,b:2"
    assert config.kafka.group_id == "g"
    assert config.kafka.auto_offset_reset == "latest"
    assert config.kafka.session_timeout_ms == 6000
    assert config.delivery.max_in_flight == 8
    assert config.delivery.commit_interval == timedelta(milliseconds=250)
    assert config.delivery.max_pending_records == 4096


# -- errors, each at its line ----------------------------------------------------------------

ROUTE_KEYS = (
    "batch, block_on, body, content_type, dead_letter_on, delay, handler, headers, "
    "idempotency_key, key, key_format, limit_key, match, max_in_flight, max_record_age, name, "
    "on_null, on_record_too_old, ordering, rate_limit, rate_limit_burst, "
    "reply_correlation_header, reply_timeout, reply_topic, "
    "retry_on, scope, service, target, topic, topic_pattern, topics, trace_context, "
    "validate_input, value_format, workflow_main"
)
KAFKA_KEYS = (
    "auto_offset_reset, bootstrap_servers, client_id, fetch_max_bytes, group_id, isolation_level, "
    "max_partition_fetch_bytes, metadata_max_age_ms, sasl_mechanism, sasl_oauth_audience, "
    "sasl_oauth_cafile, sasl_oauth_client_auth, sasl_oauth_client_id, "
    "sasl_oauth_client_secret_env, sasl_oauth_client_secret_file, sasl_oauth_extensions, "
    "sasl_oauth_issuer_url, sasl_oauth_resource, sasl_oauth_scope, "
    "sasl_oauth_token_endpoint_url, sasl_oauth_token_provider, sasl_password_env, "
    "sasl_password_file, sasl_username, security_protocol, session_timeout_ms, ssl_cafile, "
    "ssl_certfile, ssl_check_hostname, ssl_keyfile, ssl_password_env, ssl_password_file"
)
DURATION_HINT = "write it like '4s', '500ms', '1h30m' or 'PT2S'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            KAFKA + "\n[kafkaa]\nx = 1\n" + route("")[len(KAFKA) :],
            "routes.toml:4: unknown table [kafkaa]; did you mean [kafka]?",
            id="unknown-table",
        ),
        pytest.param(
            KAFKA + "\n[zzz]\nx = 1\n" + route("")[len(KAFKA) :],
            "routes.toml:4: unknown table [zzz]; expected one of ['dead_letter', 'delivery', "
            "'kafka', 'metrics', 'restate', 'routes', 'schema_registry', 'tracing']",
            id="unknown-table-far-from-any",
        ),
        pytest.param(
            KAFKA + 'group = "g"\n' + route("")[len(KAFKA) :],
            "routes.toml:3: unknown key 'group' in [kafka]; did you mean 'group_id'?",
            id="unknown-kafka-key",
        ),
        pytest.param(
            KAFKA + 'zzz = "g"\n' + route("")[len(KAFKA) :],
            f"routes.toml:3: unknown key 'zzz' in [kafka]; expected one of {KAFKA_KEYS}",
            id="unknown-kafka-key-far-from-any",
        ),
        pytest.param(
            route('handlr = "x"\n'),
            "routes.toml:9: unknown key 'handlr' in [[routes]] #1; did you mean 'handler'?",
            id="unknown-route-key",
        ),
        pytest.param(
            route('xyzzy = "x"\n'),
            f"routes.toml:9: unknown key 'xyzzy' in [[routes]] #1; expected one of {ROUTE_KEYS}",
            id="unknown-route-key-far-from-any",
        ),
        pytest.param(
            route("", target="actor"),
            "routes.toml:6: target must be one of service, object, workflow, not 'actor'",
            id="bad-target",
        ),
        pytest.param(
            f'{KAFKA}\n[[routes]]\ntopic = "t"\nservice = "S"\nhandler = "h"\n',
            "routes.toml:4: target must be one of service, object, workflow, not None",
            id="missing-target",
        ),
        pytest.param(
            route('key = "{key}"\n'),
            "routes.toml:9: a service has no key; use target = 'object' or 'workflow', "
            "or remove 'key'",
            id="key-on-service",
        ),
        pytest.param(
            route("", target="object"),
            "routes.toml:4: an object route needs 'key' (the object key or workflow id), "
            'for example key = "{key}"',
            id="object-without-key",
        ),
        pytest.param(
            route("", target="workflow", handler="run"),
            "routes.toml:4: a workflow route needs 'key' (the object key or workflow id), "
            'for example key = "{key}"',
            id="workflow-without-key",
        ),
        pytest.param(
            f'{KAFKA}\n[[routes]]\ntopic_pattern = "orders-("\ntarget = "service"\n'
            'service = "S"\nhandler = "h"\n',
            "routes.toml:5: bad topic_pattern regex: missing ), unterminated subpattern "
            "at position 7",
            id="bad-topic-pattern",
        ),
        pytest.param(
            route('delay = "4 parsecs"\n'),
            f"routes.toml:9: delay: bad duration '4 parsecs'; {DURATION_HINT}",
            id="bad-delay",
        ),
        pytest.param(
            route('delay = "{header.delay"\n'),
            "routes.toml:9: 'delay': unclosed '{' at position 0 in '{header.delay'",
            id="bad-delay-template",
        ),
        pytest.param(
            route('delay = "4s"\n', target="workflow", handler="approve").replace(
                'delay = "4s"', 'key = "{key}"\ndelay = "4s"'
            ),
            "routes.toml:10: Restate does not support delays for workflows",
            id="delay-on-workflow",
        ),
        pytest.param(
            KAFKA
            + '\n[delivery]\nmax_in_flight = 10\ncommit_interval = "soon"\n'
            + route("")[len(KAFKA) :],
            f"routes.toml:6: 'commit_interval': bad duration 'soon'; {DURATION_HINT}",
            id="bad-delivery-duration",
        ),
        pytest.param(
            KAFKA + "\n[delivery]\n\nmax_in_flight = 0\n" + route("")[len(KAFKA) :],
            "routes.toml:6: 'max_in_flight' must be a positive integer",
            id="bad-delivery-integer",
        ),
        pytest.param(
            route("")[len(KAFKA) :],
            "routes.toml:1: missing table [kafka] with bootstrap_servers (the brokers)",
            id="missing-kafka",
        ),
        pytest.param(
            '[kafka]\ngroup_id = "g"\n' + route("")[len(KAFKA) :],
            "routes.toml:1: [kafka] needs bootstrap_servers, a string 'host:port[,host:port]' "
            "or a list",
            id="missing-bootstrap-servers",
        ),
        pytest.param(
            KAFKA + "\n# nothing else\n",
            "routes.toml:1: no [[routes]]: add at least one route",
            id="no-routes",
        ),
        pytest.param(
            route('key = "{key"\n', target="object"),
            "routes.toml:9: 'key': unclosed '{' at position 0 in '{key'",
            id="bad-key-template",
        ),
        pytest.param(
            route('key = "id-{nope}"\n', target="object"),
            "routes.toml:9: 'key': unknown field 'nope'; use key, topic, partition, offset, "
            "timestamp, header.NAME, value or value.a.b in template 'id-{nope}'",
            id="unknown-field-in-key",
        ),
        pytest.param(
            route(
                'key = "{key}"\n\nidempotency_key = "{offset}"\n', target="workflow", handler="run"
            ),
            "routes.toml:11: a workflow's main handler takes no idempotency key: the workflow id "
            "already makes it run once; remove idempotency_key",
            id="idempotency-key-on-workflow-run",
        ),
        pytest.param(
            route('match = { "nope" = 1 }\n'),
            "routes.toml:9: match: unknown field 'nope'; use key, topic, partition, offset, "
            "timestamp, header.NAME, value or value.a.b",
            id="bad-match-field",
        ),
        pytest.param(
            route('headers = "x-trace"\n'),
            "routes.toml:9: headers must be a list of Kafka header names",
            id="headers-not-a-list",
        ),
        pytest.param(
            route('ordering = "random"\n'),
            "routes.toml:9: ordering must be one of key, partition, none, not 'random'",
            id="bad-ordering",
        ),
        pytest.param(
            '[kafka]\nbootstrap_servers = "b:9092"\nauto_offset_reset = "newest"\n'
            + route("")[len(KAFKA) :],
            "routes.toml:3: auto_offset_reset must be one of earliest, latest, not 'newest'",
            id="bad-offset-reset",
        ),
        pytest.param(
            KAFKA + '\n[metrics]\nlisten = "9464"\n' + route("")[len(KAFKA) :],
            "routes.toml:5: listen must be 'host:port', not '9464'",
            id="bad-metrics-listen",
        ),
    ],
)
def test_single_error_at_its_line(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_toml_syntax_error_uses_the_tomllib_line() -> None:
    text = f'{KAFKA}\n[[routes]]\ntopic = "t"\ntarget "service"\n'
    assert problems(text) == [
        "routes.toml:6: TOML syntax error: Expected '=' after a key in a key/value pair"
    ]


def test_toml_duplicate_table_is_a_syntax_error() -> None:
    assert problems(KAFKA + "\n\n[kafka]\n") == [
        "routes.toml:5: TOML syntax error: Cannot declare ('kafka',) twice"
    ]


def test_duplicate_explicit_route_names_reported_once_at_the_second() -> None:
    text = (
        f'{KAFKA}\n[[routes]]\nname = "a"\ntopic = "t"\ntarget = "service"\nservice = "S"\n'
        'handler = "h"\n\n[[routes]]\ntopic = "t"\nname = "a"\ntarget = "service"\n'
        'service = "S"\nhandler = "h2"\n'
    )
    assert problems(text) == ["routes.toml:13: duplicate route name 'a' (first at line 5)"]


def test_identical_default_names_reported_at_the_second_route() -> None:
    text = (
        f'{KAFKA}\n[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\n'
        'handler = "h"\n\n[[routes]]\ntopic = "u"\ntarget = "service"\nservice = "S"\n'
        'handler = "h"\n'
    )
    assert problems(text) == [
        "routes.toml:10: two routes are both called 'S.h' (first at line 4); "
        "give them distinct names"
    ]


def test_explicit_name_clashing_with_a_default_name() -> None:
    text = (
        f'{KAFKA}\n[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\n'
        'handler = "h"\n\n[[routes]]\nname = "S.h"\ntopic = "u"\ntarget = "service"\n'
        'service = "X"\nhandler = "y"\n'
    )
    assert problems(text) == [
        "routes.toml:10: two routes are both called 'S.h' (first at line 4); "
        "give them distinct names"
    ]


def test_distinct_names_for_the_same_handler_are_fine() -> None:
    text = (
        f'{KAFKA}\n[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\n'
        'handler = "h"\n\n[[routes]]\nname = "second"\ntopic = "u"\ntarget = "service"\n'
        'service = "S"\nhandler = "h"\n'
    )
    assert [r.name for r in parse(text).routes] == ["S.h", "second"]


def test_several_problems_are_reported_together() -> None:
    text = (
        "[kafka]\n"  # 1
        'bootstrap_servers = "b:9092"\n'  # 2
        "bogus = 1\n"  # 3
        "\n"  # 4
        "[extra]\n"  # 5
        "\n"  # 6
        "[[routes]]\n"  # 7
        'topic = "t"\n'  # 8
        'target = "actor"\n'  # 9
        'service = "S"\n'  # 10
        'handler = "h"\n'  # 11
        "\n"  # 12
        "[[routes]]\n"  # 13
        'topic = "t"\n'  # 14
        'target = "object"\n'  # 15
        'service = "O"\n'  # 16
        'handler = "h"\n'  # 17
        'delay = "soon"\n'  # 18
    )
    found = problems(text)
    assert found == [
        "routes.toml:5: unknown table [extra]; expected one of "
        "['dead_letter', 'delivery', 'kafka', 'metrics', 'restate', 'routes', 'schema_registry', "
        "'tracing']",
        f"routes.toml:3: unknown key 'bogus' in [kafka]; expected one of {KAFKA_KEYS}",
        "routes.toml:9: target must be one of service, object, workflow, not 'actor'",
        "routes.toml:13: an object route needs 'key' (the object key or workflow id), "
        'for example key = "{key}"',
        f"routes.toml:18: delay: bad duration 'soon'; {DURATION_HINT}",
    ]
