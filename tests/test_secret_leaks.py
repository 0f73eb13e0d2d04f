"""Known, distinctive secret values go through success and failure paths; none appears anywhere
an operator or an attacker could read: the DEBUG log, ``/metrics``, ``/status.json``, the page,
dead-letter records, ``route`` and ``check`` output, exception messages and ``repr``s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config
from bridge.ingress import Client
from tests.helpers import recorder, route, unique, until
from tests.stack.bridge_process import REPO_ROOT, BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.proxy import IngressProxy

INGRESS = "ingress-Q7xK2-secret"
LISTENER = "listener-Z9pL4-secret"
SASL = "sasl-M3vR8-secret"
ADMIN = "admin-W5tN1-secret"
OAUTH = "oauth-client-K8wD6-secret"
SECRETS = (INGRESS, LISTENER, SASL, ADMIN, OAUTH)


def assert_clean(where: str, text: str | bytes) -> None:
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for secret in SECRETS:
        assert secret not in data, f"{secret!r} leaked into {where}"


def sasl_routes(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "sasl").write_text(SASL + "\n")
    (tmp_path / "ingress").write_text(INGRESS + "\n")
    (tmp_path / "admin").write_text(ADMIN + "\n")
    path = tmp_path / "sasl.routes.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = "127.0.0.1:1"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
        f'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "bridge"\n'
        f'sasl_password_file = "{tmp_path / "sasl"}"\n{extra}'
        f'[restate]\ntoken_file = "{tmp_path / "ingress"}"\n'
        f'admin_token_file = "{tmp_path / "admin"}"\n'
        + route(
            topic="t", target="object", service="S", handler="h", key="{value.k}", headers=["x-a"]
        )
    )
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "RESTATE_AUTH_TOKEN": INGRESS},
        timeout=60,
        check=False,
    )


def test_route_check_reprs_and_errors_hold_no_secret(tmp_path: Path) -> None:
    path = sasl_routes(tmp_path)
    config = load_config(path, {})
    assert config.kafka.sasl_password == SASL
    assert config.restate.token == INGRESS
    assert config.restate.admin_token == ADMIN
    assert_clean("repr(config)", repr(config))
    assert_clean("str(config)", str(config))
    client = Client("http://127.0.0.1:1", token=INGRESS)
    assert_clean("repr(client)", repr(client))
    for args in (
        ["check", str(path)],
        ["route", str(path), "--topic", "t", "--value", '{"k": "a"}', "--header", "x-a=1"],
        ["route", str(path), "--topic", "t", "--value", "not json"],
    ):
        done = cli(*args)
        assert done.returncode == 0, done.stderr
        assert_clean(f"{args[0]} stdout", done.stdout)
        assert_clean(f"{args[0]} stderr", done.stderr)
    # an admin API that does not answer, reached with the token and with credentials in its URL
    for admin in ("http://127.0.0.1:1", f"http://bridge:{ADMIN}@127.0.0.1:1"):
        done = cli("check", str(path), "--restate-admin", admin)
        assert done.returncode == 1, done.stderr
        assert "cannot check the routes against Restate" in done.stderr
        assert_clean("check --restate-admin", done.stdout + done.stderr)
    # a bad file naming the secrets: both sources, then a secret file that is not one line
    bad = sasl_routes(tmp_path, f'sasl_password_env = "P"\nssl_password_file = "{tmp_path}"\n')
    done = cli("check", str(bad))
    assert done.returncode == 2
    assert "not both" in done.stderr
    assert_clean("check stderr", done.stderr + done.stdout)
    path = sasl_routes(tmp_path)
    (tmp_path / "ingress").write_text(f"{INGRESS}\n{INGRESS}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert_clean("a ConfigError", str(info.value))


def test_the_oauth_client_secret_leaks_nowhere(tmp_path: Path) -> None:
    (tmp_path / "oauth").write_text(OAUTH + "\n")
    path = tmp_path / "oauth.routes.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = "127.0.0.1:1"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
        'sasl_mechanism = "OAUTHBEARER"\n'
        'sasl_oauth_token_endpoint_url = "http://127.0.0.1:1/token"\n'
        f'sasl_oauth_client_id = "bridge"\nsasl_oauth_client_secret_file = "{tmp_path / "oauth"}"\n'
        + route(topic="t", target="service", service="S", handler="h")
    )
    config = load_config(path, {})
    assert config.kafka.sasl_oauth_client_secret == OAUTH
    assert_clean("repr(config)", repr(config) + str(config.kafka))
    for args in (
        ["check", str(path)],
        ["route", str(path), "--topic", "t", "--value", "{}"],
        ["check", str(path), "--restate-admin", "http://127.0.0.1:1"],
    ):
        done = cli(*args)
        assert_clean(f"{args[0]} output", done.stdout + done.stderr)


@pytest.mark.integration
async def test_a_running_bridge_leaks_no_secret_on_success_or_failure(
    broker: Broker, bridges: BridgeFactory, proxy: IngressProxy, tmp_path: Path
) -> None:
    topic, dlq = unique("leak"), unique("dlq")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    (tmp_path / "ingress").write_text(INGRESS + "\n")
    (tmp_path / "listener").write_text(LISTENER + "\n")
    proxy.tokens = {INGRESS}
    proc = bridges.process("bridge", env={"BRIDGE_LOG_LEVEL": "DEBUG"})
    proc.token = LISTENER
    routes = bridges.routes(
        recorder(topic, key="{value.k}", headers=["x-note"]),
        group_id=unique("g"),
        dead_letter_topic=dlq,
        restate_extra=f'token_file = "{tmp_path / "ingress"}"\n',
        metrics_extra=f'token_file = "{tmp_path / "listener"}"\n',
    )
    routes = routes.replace(bridges.restate.ingress_url, proxy.url)
    routes = routes.replace("127.0.0.1:0", f"127.0.0.1:{proc.metrics_port}")
    proc.write_routes(routes)
    proc.start()
    good = Message(b"k", b'{"k": "a"}', [("x-note", b"fine")])
    poison = Message(b"k", b"not json", [("x-note", b"x")])
    await produce(broker.bootstrap_servers, topic, [good, poison])
    dead = await read_topic(broker.bootstrap_servers, dlq, expect=1, timeout=30)
    # the ingress refuses the bridge's token for a while: 401s, retried, then accepted again
    proxy.tokens = {"another-token"}
    await produce(broker.bootstrap_servers, topic, [Message(b"k", b'{"k": "b"}')])
    await until(lambda: len(proxy.refused_tokens), lambda n: n >= 2, "refused sends", 30)
    proxy.tokens = {INGRESS}
    await until(lambda: len(proxy.answered(202)), lambda n: n >= 2, "both good records", 30)

    for path in ("/metrics", "/status.json", "/", "/readyz"):
        status, body = proc._get(path)
        assert status == 200, path
        assert_clean(path, body)
    proc.token = "wrong"
    status, body = proc._get("/status.json")
    assert status == 401
    assert_clean("a 401 answer", body)
    for letter in dead:
        assert_clean("a dead letter", repr(letter.value) + repr(letter.key) + repr(letter.headers))
    assert proc.terminate() == 0
    log = proc.log()
    assert "DEBUG" in log
    assert "ingress answered 401" in log or "401" in log
    assert_clean("the DEBUG log", log)
