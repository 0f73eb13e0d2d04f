"""Operator mistakes ``check`` must find before ``run`` fails on them: each at its line.

Every case is one routing file (and environment) with exactly one mistake; the expected line is
the line of the key at fault. ``route()`` lays the file out as in ``test_config.py``: ``[kafka]``
at line 1, ``[[routes]]`` at line 4, then topic (5), target (6), service (7), handler (8), extra
keys from line 9.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.config import ROUTE_KEYS, BridgeConfig, ConfigError, load_config, parse_config
from bridge.core.record import RESERVED_HEADERS, reserved_header

PATH = Path("routes.toml")
KAFKA = '[kafka]\nbootstrap_servers = "b:9092"\n'
ROUTE = '[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'


def route(body: str = "", *, topic: str = 'topic = "t"', kafka: str = "") -> str:
    """``kafka`` lines go after bootstrap_servers (from line 3) and push the rest down."""
    return (
        f'{KAFKA}{kafka}\n[[routes]]\n{topic}\ntarget = "service"\nservice = "S"\n'
        f'handler = "h"\n{body}'
    )


def before_routes(tables: str) -> str:
    """``tables`` from line 4 (after ``[kafka]`` and a blank line), then one good route."""
    return f"{KAFKA}\n{tables}\n{ROUTE}"


def parse(text: str, env: dict[str, str] | None = None) -> BridgeConfig:
    return parse_config(text, PATH, env or {})


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value.problems


DURATION_KEYS = ["commit_interval", "drain_timeout", "retry_initial", "retry_max", "max_delay"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # enums, validated from their Literal type
        pytest.param(
            route(kafka='security_protocol = "TLS"\n'),
            "routes.toml:3: security_protocol must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, "
            "SASL_SSL, not 'TLS'",
            id="security-protocol",
        ),
        pytest.param(
            route(kafka='security_protocol = "SASL_SSL"\nsasl_mechanism = "GSSAPI"\n'),
            "routes.toml:4: sasl_mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, "
            "OAUTHBEARER, not 'GSSAPI'",
            id="sasl-mechanism",
        ),
        pytest.param(
            route(kafka='isolation_level = "dirty"\n'),
            "routes.toml:3: isolation_level must be one of read_committed, read_uncommitted, "
            "not 'dirty'",
            id="isolation-level",
        ),
        pytest.param(
            route(kafka="auto_offset_reset = 1\n"),
            "routes.toml:3: auto_offset_reset must be one of earliest, latest, not 1",
            id="offset-reset-not-a-string",
        ),
        pytest.param(
            route('on_null = "drop"\n'),
            "routes.toml:9: on_null must be one of skip, send, dead_letter, not 'drop'",
            id="on-null",
        ),
        pytest.param(
            route("ordering = ['key']\n"),
            "routes.toml:9: ordering must be one of key, partition, none, not ['key']",
            id="ordering-not-a-string",
        ),
        # durations and integers
        *(
            pytest.param(
                before_routes(f'[delivery]\n{key} = "0s"\n'),
                f"routes.toml:5: {key!r} must be longer than zero, not '0s'",
                id=f"zero-{key}",
            )
            for key in DURATION_KEYS
        ),
        pytest.param(
            before_routes('[restate]\nrequest_timeout = "0ms"\n'),
            "routes.toml:5: 'request_timeout' must be longer than zero, not '0ms'",
            id="zero-request-timeout",
        ),
        pytest.param(
            before_routes('[delivery]\nretry_max = "3651d"\n'),
            "routes.toml:5: 'retry_max': '3651d' is too long; at most 3650d",
            id="duration-too-long",
        ),
        pytest.param(
            before_routes('[delivery]\ndrain_timeout = "1000000000d"\n'),
            "routes.toml:5: 'drain_timeout': '1000000000d' is too long; at most 3650d",
            id="duration-beyond-timedelta",
        ),
        pytest.param(
            before_routes('[delivery]\nretry_initial = "20s"\nretry_max = "10s"\n'),
            "routes.toml:5: retry_initial (20s) must not be longer than retry_max (10s)",
            id="retry-initial-above-max",
        ),
        pytest.param(
            before_routes("[delivery]\nmax_pending_per_partition = 0\n"),
            "routes.toml:5: 'max_pending_per_partition' must be a positive integer",
            id="zero-max-pending-per-partition",
        ),
        pytest.param(
            before_routes("[restate]\nmax_connections = 99999999999999999999999\n"),
            "routes.toml:5: 'max_connections' must be an integer from 1 to 2147483647",
            id="huge-integer",
        ),
        pytest.param(
            route(kafka="session_timeout_ms = 10\n"),
            "routes.toml:3: 'session_timeout_ms' must be an integer from 1000 to 2147483647",
            id="session-timeout-too-short",
        ),
        pytest.param(
            route("max_in_flight = 1.5\n"),
            "routes.toml:9: 'max_in_flight' must be a positive integer",
            id="route-max-in-flight-float",
        ),
        # the metrics port
        pytest.param(
            before_routes('[metrics]\nlisten = "127.0.0.1:65536"\n'),
            "routes.toml:5: listen port must be from 0 to 65535 (0 picks a free port), not 65536",
            id="port-too-big",
        ),
        pytest.param(
            before_routes('[metrics]\nlisten = ":9464"\n'),
            "routes.toml:5: listen must be 'host:port', not ':9464'",
            id="port-without-host",
        ),
        pytest.param(
            before_routes('[metrics]\nlisten = "h:-1"\n'),
            "routes.toml:5: listen must be 'host:port', not 'h:-1'",
            id="negative-port",
        ),
        # Kafka servers and topics
        pytest.param(
            '[kafka]\nbootstrap_servers = "b:x"\n\n' + ROUTE,
            "routes.toml:2: bootstrap_servers: bad port in 'b:x'; a port is 1 to 65535",
            id="bootstrap-bad-port",
        ),
        pytest.param(
            '[kafka]\nbootstrap_servers = ["a:1", ""]\n\n' + ROUTE,
            "routes.toml:2: bootstrap_servers must be a string 'host:port[,host:port]' or a list",
            id="bootstrap-empty-list-item",
        ),
        pytest.param(
            route(topic='topic = "my topic"'),
            "routes.toml:5: topic: 'my topic' is not a Kafka topic name (1 to 249 of the "
            "characters a-z A-Z 0-9 . _ -)",
            id="bad-topic-name",
        ),
        pytest.param(
            before_routes('[dead_letter]\ntopic = "dead letters"\n'),
            "routes.toml:5: 'dead letters' is not a Kafka topic name (1 to 249 of the "
            "characters a-z A-Z 0-9 . _ -)",
            id="bad-dead-letter-topic",
        ),
        # regexes
        pytest.param(
            route(topic='topic_pattern = "(?<=a+)b"'),
            "routes.toml:5: bad topic_pattern regex: look-behind requires fixed-width pattern",
            id="regex-lookbehind",
        ),
        pytest.param(
            route(topic='topic_pattern = "a{4294967296}"'),
            "routes.toml:5: bad topic_pattern regex: the repetition number is too large",
            id="regex-overflow",
        ),
        pytest.param(
            route(topic='topic_pattern = "(?i)orders"'),
            "routes.toml:5: bad topic_pattern regex: global flags not at the start of the "
            "expression at position 3",
            id="regex-late-global-flag",
        ),
        # headers a route forwards
        pytest.param(
            route('headers = ["x-trace", "Authorization"]\n'),
            "routes.toml:9: headers: 'Authorization' is set by the bridge or the HTTP connection "
            "and cannot be forwarded from a record",
            id="reserved-header",
        ),
        pytest.param(
            route('headers = ["X-Restate-Id"]\n'),
            "routes.toml:9: headers: 'X-Restate-Id' is set by the bridge or the HTTP connection "
            "and cannot be forwarded from a record",
            id="restate-header",
        ),
        pytest.param(
            route('headers = ["x trace"]\n'),
            "routes.toml:9: headers: 'x trace' is not a valid HTTP header name",
            id="header-not-a-token",
        ),
        pytest.param(
            route('headers = ["x-a\\nx-b"]\n'),
            "routes.toml:9: headers: 'x-a\\nx-b' is not a valid HTTP header name",
            id="header-injection",
        ),
        pytest.param(
            route('content_type = "text/plain\\r\\nx-evil: 1"\n'),
            "routes.toml:9: 'text/plain\\r\\nx-evil: 1' holds control characters, which an HTTP "
            "header cannot carry",
            id="content-type-control-characters",
        ),
        # the dead-letter topic and delays
        pytest.param(
            before_routes('[dead_letter]\ntopic = "t"\n'),
            "routes.toml:8: route 'S.h' reads the dead-letter topic 't'; its dead letters would "
            "be routed again",
            id="route-reads-dead-letter-topic",
        ),
        pytest.param(
            f'{KAFKA}\n[dead_letter]\ntopic = "dlq"\n\n[[routes]]\ntopics = ["a", "dlq"]\n'
            'target = "service"\nservice = "S"\nhandler = "h"\n',
            "routes.toml:8: route 'S.h' reads the dead-letter topic 'dlq'; its dead letters "
            "would be routed again",
            id="route-lists-dead-letter-topic",
        ),
        pytest.param(
            f'{KAFKA}\n[dead_letter]\ntopic = "orders.dlq"\n\n[[routes]]\n'
            'topic_pattern = "orders.*"\ntarget = "service"\nservice = "S"\nhandler = "h"\n',
            "routes.toml:8: route 'S.h' reads the dead-letter topic 'orders.dlq'; its dead "
            "letters would be routed again",
            id="route-pattern-matches-dead-letter-topic",
        ),
        pytest.param(
            before_routes('[delivery]\nmax_delay = "1h"\n') + 'delay = "2h"\n',
            "routes.toml:12: delay 7200s is longer than [delivery] max_delay (3600s)",
            id="delay-beyond-max-delay",
        ),
        pytest.param(
            route('delay = "1000000000d"\n'),
            "routes.toml:9: delay: '1000000000d' is too long",
            id="delay-beyond-timedelta",
        ),
        # other shapes a file can take
        pytest.param(
            route('match = { "value.n" = nan }\n'),
            "routes.toml:9: match 'value.n': nan never equals anything",
            id="match-nan",
        ),
        pytest.param(
            route('[routes.match]\n"value.a" = { b = 1 }\n'),
            "routes.toml:9: match 'value.a': compare with a string, number or boolean",
            id="match-nested-table-at-its-header",
        ),
    ],
)
def test_one_mistake_at_its_line(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_routes_that_are_not_tables() -> None:
    text = 'routes = [1, "x"]\n' + KAFKA
    assert problems(text) == [
        "routes.toml:1: each [[routes]] entry must be a table",
        "routes.toml:1: each [[routes]] entry must be a table",
    ]


def test_zero_grace_and_zero_port_are_fine() -> None:
    config = parse(before_routes('[delivery]\nunknown_target_grace = "0s"\n'))
    assert config.delivery.unknown_target_grace == timedelta(0)
    config = parse(before_routes('[metrics]\nlisten = "127.0.0.1:0"\n'))
    assert config.metrics.host_port == ("127.0.0.1", 0)
    config = parse(before_routes('[metrics]\nlisten = "[::1]:9464"\n'))
    assert config.metrics.host_port == ("::1", 9464)


def test_delay_equal_to_max_delay_is_fine() -> None:
    (r,) = parse(before_routes('[delivery]\nmax_delay = "1h"\n') + 'delay = "60m"\n').routes
    assert r.delay == timedelta(hours=1)


def test_every_reserved_header_is_refused_in_any_case() -> None:
    for name in [*sorted(RESERVED_HEADERS), "x-restate-anything"]:
        assert reserved_header(name.upper())
        found = problems(route(f'headers = ["{name.title()}"]\n'))
        assert found == [
            f"routes.toml:9: headers: {name.title()!r} is set by the bridge or the HTTP "
            "connection and cannot be forwarded from a record"
        ]
    assert not reserved_header("x-trace")
    (r,) = parse(route('headers = ["x-trace", "traceparent", "x-trace"]\n')).routes
    assert r.headers == ("x-trace", "traceparent")


# -- SASL and TLS -----------------------------------------------------------------------------


def test_sasl_mechanism_needs_a_sasl_protocol() -> None:
    text = route(kafka='sasl_mechanism = "PLAIN"\nsasl_username = "u"\nsasl_password_env = "P"\n')
    assert problems(text, {"P": "secret"}) == [
        "routes.toml:3: sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL, "
        "not PLAINTEXT"
    ]


def test_sasl_protocol_needs_a_mechanism() -> None:
    assert problems(route(kafka='security_protocol = "SASL_PLAINTEXT"\n')) == [
        "routes.toml:3: security_protocol SASL_PLAINTEXT needs sasl_mechanism "
        "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)"
    ]


def test_sasl_credentials_are_required_for_plain_and_scram() -> None:
    text = route(kafka='security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "SCRAM-SHA-512"\n')
    assert problems(text) == [
        "routes.toml:4: sasl_mechanism SCRAM-SHA-512 needs sasl_username",
        "routes.toml:4: sasl_mechanism SCRAM-SHA-512 needs sasl_password_env or sasl_password_file",
    ]


def test_sasl_credentials_without_a_mechanism() -> None:
    text = route(kafka='sasl_username = "u"\n')
    assert problems(text) == ["routes.toml:3: sasl_username is only used with sasl_mechanism"]


def test_oauthbearer_needs_a_source_of_tokens() -> None:
    text = route(kafka='security_protocol = "SASL_SSL"\nsasl_mechanism = "OAUTHBEARER"\n')
    assert problems(text) == [
        "routes.toml:4: sasl_mechanism OAUTHBEARER needs sasl_oauth_token_endpoint_url, "
        "sasl_oauth_issuer_url or sasl_oauth_token_provider"
    ]


SASL = (
    'security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\nsasl_username = "bridge"\n'
    'sasl_password_env = "KAFKA_PASSWORD"\n'
)


@pytest.mark.parametrize("env", [{}, {"KAFKA_PASSWORD": ""}])
def test_sasl_password_variable_unset_or_empty(env: dict[str, str]) -> None:
    assert problems(route(kafka=SASL), env) == [
        "$KAFKA_PASSWORD: unset or empty, but [kafka] sasl_password_env names it as the SASL "
        "password"
    ]


def test_sasl_password_is_resolved_and_never_shown() -> None:
    config = parse(route(kafka=SASL), {"KAFKA_PASSWORD": "hunter2"})
    assert config.kafka.sasl_password == "hunter2"
    assert config.kafka.sasl_username == "bridge"
    assert "hunter2" not in repr(config)


def test_ssl_files_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    text = route(kafka=f'security_protocol = "SSL"\nssl_cafile = "{missing}"\n')
    assert problems(text) == [f"routes.toml:4: ssl_cafile: no such file {str(missing)!r}"]


def test_ssl_files_must_hold_certificates(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    text = route(kafka=f'security_protocol = "SSL"\nssl_cafile = "{bad}"\n')
    (problem,) = problems(text)
    assert problem.startswith("routes.toml:3: TLS files do not load: ")


def test_ssl_files_need_an_ssl_protocol_and_a_key_needs_a_certificate(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("")
    text = route(kafka=f'ssl_keyfile = "{key}"\n')
    assert problems(text) == [
        "routes.toml:3: ssl_keyfile is only used with security_protocol SSL or SASL_SSL, "
        "not PLAINTEXT",
        "routes.toml:3: ssl_keyfile needs ssl_certfile (the certificate)",
    ]


# -- the environment --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"BRIDGE_LOG_LEVEL": "loud"},
            "$BRIDGE_LOG_LEVEL: log level must be one of debug, info, warning, error, critical, "
            "not 'loud'",
        ),
        (
            {"BRIDGE_METRICS_LISTEN": "9464"},
            "$BRIDGE_METRICS_LISTEN: listen must be 'host:port', not '9464'",
        ),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "a:1,b:99999"},
            "$KAFKA_BOOTSTRAP_SERVERS: bootstrap_servers: bad port in 'b:99999'; a port is 1 to "
            "65535",
        ),
        ({"RESTATE_URL": "http://"}, "$RESTATE_URL: ingress_url 'http://' has no host"),
        (
            {"RESTATE_URL": "http://h:port"},
            "$RESTATE_URL: ingress_url 'http://h:port': Port could not be cast to integer value "
            "as 'port'",
        ),
    ],
)
def test_bad_environment_override(env: dict[str, str], expected: str) -> None:
    assert problems(route(), env) == [expected]


def test_environment_overrides_and_secrets() -> None:
    env = {
        "BRIDGE_LOG_LEVEL": "Debug",
        "BRIDGE_METRICS_LISTEN": "0.0.0.0:0",
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,[::1]:9093,k3",
        "RESTATE_URL": "https://restate.example",
        "RESTATE_AUTH_TOKEN": "s3cret",
    }
    config = parse(route(), env)
    assert config.log_level == "DEBUG"
    assert config.metrics.listen == "0.0.0.0:0"
    assert config.kafka.bootstrap_servers == "k1:9092,[::1]:9093,k3"
    assert config.restate.ingress_url == "https://restate.example"
    assert config.restate.token == "s3cret"
    assert "s3cret" not in repr(config)
    plain = parse(route(), {"RESTATE_AUTH_TOKEN": "", "BRIDGE_LOG_LEVEL": ""})
    assert plain.restate.token is None
    assert plain.log_level == "INFO"


def test_an_override_supplies_a_missing_required_value() -> None:
    text = "[kafka]\n\n" + ROUTE
    assert parse(text, {"KAFKA_BOOTSTRAP_SERVERS": "k:1"}).kafka.bootstrap_servers == "k:1"


def test_secrets_cannot_be_written_in_the_file() -> None:
    (found,) = problems(route(kafka='sasl_password = "x"\n'))
    assert found.startswith("routes.toml:3: unknown key 'sasl_password' in [kafka]")
    (found,) = problems(before_routes('[restate]\ntoken = "x"\n'))
    assert found.startswith("routes.toml:5: unknown key 'token' in [restate]")


# -- files that are not TOML text -------------------------------------------------------------


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_bytes(b'[kafka]\nbootstrap_servers = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == [f"{path}:2: the routes file is not UTF-8 text (byte 0xff)"]


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, {})
    assert info.value.problems == [f"{tmp_path}: cannot read the routes file: Is a directory"]


def test_nested_too_deeply() -> None:
    assert problems("a = " + "[" * 5000 + "]" * 5000) == [
        "routes.toml:1: TOML syntax error: nested too deeply"
    ]


def test_lines_count_only_newlines() -> None:
    # U+2028 is a line break for str.splitlines, not for TOML
    text = f'{KAFKA}client_id = "a\u2028b"\n\n{ROUTE}target = "actor"\n'.replace(
        'target = "service"\nservice', "service"
    )
    assert problems(text) == [
        "routes.toml:9: target must be one of service, object, workflow, not 'actor'"
    ]


def test_locating_lines_is_linear_on_any_line() -> None:
    # a multi-line string may hold a line that looks almost like a table header
    text = KAFKA + 'client_id = """\n[' + " " * 20_000 + 'x\n"""\n\n' + ROUTE + 'target = "actor"\n'
    text = text.replace('target = "service"\n', "", 1)
    started = time.monotonic()
    assert problems(text) == [
        "routes.toml:11: target must be one of service, object, workflow, not 'actor'"
    ]
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("misspelt", "meant", "where"),
    [
        ("handlr", "handler", "[[routes]] #1"),
        ("servce", "service", "[[routes]] #1"),
        ("targt", "target", "[[routes]] #1"),
        ("tpoic", "topic", "[[routes]] #1"),
    ],
)
def test_a_misspelt_route_key_is_one_problem_with_a_suggestion(
    misspelt: str, meant: str, where: str
) -> None:
    """The key it stands for is not reported missing as well."""
    table = {"topic": '"t"', "target": '"service"', "service": '"S"', "handler": '"h"'}
    lines = [f"{misspelt if k == meant else k} = {v}" for k, v in table.items()]
    text = '[kafka]\nbootstrap_servers = "k:9092"\n\n[[routes]]\n' + "\n".join(lines) + "\n"
    line = 5 + list(table).index(meant)
    assert problems(text) == [
        f"routes.toml:{line}: unknown key {misspelt!r} in {where}; did you mean {meant!r}?"
    ]


def test_a_misspelt_required_table_key_is_one_problem() -> None:
    text = '[kafka]\nbootstrap_server = "k:9092"\n\n[[routes]]\ntopic = "t"\ntarget = "service"\n'
    text += 'service = "S"\nhandler = "h"\n'
    assert problems(text) == [
        "routes.toml:2: unknown key 'bootstrap_server' in [kafka]; "
        "did you mean 'bootstrap_servers'?"
    ]


def test_a_misspelt_object_key_is_one_problem() -> None:
    text = '[kafka]\nbootstrap_servers = "k:9092"\n\n[[routes]]\ntopic = "t"\ntarget = "object"\n'
    text += 'service = "S"\nhandler = "h"\nkye = "{key}"\n'
    said = "routes.toml:9: unknown key 'kye' in [[routes]] #1; did you mean 'key'?"
    assert problems(text) == [said]
    far = text.replace("kye", "zzz")
    assert problems(far) == [
        "routes.toml:9: unknown key 'zzz' in [[routes]] #1; expected one of "
        + ", ".join(sorted(ROUTE_KEYS)),
        "routes.toml:4: an object route needs 'key' (the object key or workflow id), "
        'for example key = "{key}"',
    ]


def test_a_misspelt_table_is_one_problem_with_a_suggestion() -> None:
    text = '[kafak]\nbootstrap_servers = "k:9092"\n\n[[routes]]\ntopic = "t"\ntarget = "service"\n'
    text += 'service = "S"\nhandler = "h"\n'
    assert problems(text) == ["routes.toml:1: unknown table [kafak]; did you mean [kafka]?"]


def test_a_misspelt_batch_key_gets_a_suggestion() -> None:
    text = '[kafka]\nbootstrap_servers = "k:9092"\n\n[[routes]]\ntopic = "t"\ntarget = "service"\n'
    text += 'service = "S"\nhandler = "h"\nbatch = { max_record = 5 }\n'
    assert problems(text) == [
        "routes.toml:9: unknown key 'max_record' in batch; did you mean 'max_records'?"
    ]
