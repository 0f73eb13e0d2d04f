"""The bridge over TLS, mTLS and SASL against a real Apache Kafka, and how it fails when refused.

One session broker (``tests/stack/secure_kafka.py``) has a listener per setup; certificates are
made for the session by ``tests/stack/tls.py``. Test records are produced, and the group's offsets
and the dead-letter topic read, through the broker's PLAINTEXT listener; the bridge's routes file
names only the secured listener, and a Kafka broker answers Metadata with the endpoints of the
listener the request came in on, so every consumer, commit and dead-letter connection of the
bridge goes through the secured listener.

Apache Kafka only: tansu 0.6.0 speaks neither TLS nor SASL to clients (its ``--cert`` flag leaves
the listener plaintext: a TLS client hangs in its handshake; SASL PLAIN is refused as an unsupported
mechanism), so there is nothing to run there (docs/security.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bridge.consume.kafka import (
    AUTHENTICATION_FAILED,
    CLIENT_CERTIFICATE,
    EXPIRED,
    HOSTNAME_MISMATCH,
    NOT_TRUSTED,
)
from bridge.ingress import Client
from tests.helpers import recorded, recorder, unique, until
from tests.stack import apache_kafka
from tests.stack.apache_kafka import ApacheKafkaBroker
from tests.stack.bridge_process import BridgeProcess, routes_toml
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.logs import keep_log
from tests.stack.restate import RestateServer
from tests.stack.secure_kafka import PASSWORDS, USER, secure_broker
from tests.stack.tls import KEY_PASSPHRASE, Certificates

pytestmark = pytest.mark.integration

PASSWORD_VARIABLE = "BRIDGE_TEST_KAFKA_PASSWORD"


@dataclass(frozen=True)
class SecureKafka:
    broker: ApacheKafkaBroker
    certs: Certificates

    @property
    def admin(self) -> str:
        """The PLAINTEXT listener: setup and checks, never the bridge."""
        return self.broker.bootstrap_servers


@pytest.fixture(scope="session")
def secure_kafka(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[SecureKafka]:
    reason = apache_kafka.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Apache Kafka is mandatory in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    broker, certs = secure_broker(stack_dir / "secure-kafka")
    keep_log(request.config, broker.workdir / "kafka.log")
    broker.start()
    try:
        yield SecureKafka(broker, certs)
    finally:
        broker.stop()


@dataclass(frozen=True)
class Setup:
    """How the bridge connects: the listener and the ``[kafka]`` lines (``{ca}``, ``{cert}``,
    ``{key}``, ``{untrusted_ca}``, ``{user}`` are filled in), and the password it is given."""

    listener: str
    kafka: str
    password: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    secret_file: str | None = None
    """Written to ``{secret_file}`` (a Kubernetes-style secret file) before the bridge starts."""

    def lines(self, certs: Certificates, secret_file: Path) -> str:
        if self.secret_file is not None:
            secret_file.write_text(self.secret_file + "\n")
        return self.kafka.format(
            ca=certs.ca,
            cert=certs.client.cert,
            key=certs.client.key,
            encrypted_key=certs.client_encrypted_key,
            untrusted_ca=certs.untrusted_ca,
            user=USER,
            secret_file=secret_file,
        )

    def env(self) -> dict[str, str]:
        return {} if self.password is None else {PASSWORD_VARIABLE: self.password}


TLS = 'security_protocol = "SSL"\nssl_cafile = "{ca}"\n'
MTLS = TLS + 'ssl_certfile = "{cert}"\nssl_keyfile = "{key}"\n'


def sasl(protocol: str, mechanism: str, user: str = "{user}") -> str:
    tls = 'ssl_cafile = "{ca}"\n' if protocol == "SASL_SSL" else ""
    return (
        f'security_protocol = "{protocol}"\n{tls}sasl_mechanism = "{mechanism}"\n'
        f'sasl_username = "{user}"\nsasl_password_env = "{PASSWORD_VARIABLE}"\n'
    )


WORKING = {
    "ssl": Setup("SSL", TLS),
    "mtls": Setup("MTLS", MTLS),
    "sasl-plaintext-plain": Setup("SASL", sasl("SASL_PLAINTEXT", "PLAIN"), PASSWORDS["PLAIN"]),
    "sasl-plaintext-scram-sha-256": Setup(
        "SASL", sasl("SASL_PLAINTEXT", "SCRAM-SHA-256"), PASSWORDS["SCRAM-SHA-256"]
    ),
    "sasl-ssl-scram-sha-512": Setup(
        "SASL_SSL", sasl("SASL_SSL", "SCRAM-SHA-512"), PASSWORDS["SCRAM-SHA-512"]
    ),
    "sasl-ssl-plain": Setup("SASL_SSL", sasl("SASL_SSL", "PLAIN"), PASSWORDS["PLAIN"]),
    # secrets from files: a SASL password, and the passphrase of an encrypted client key
    "sasl-ssl-scram-sha-512-password-file": Setup(
        "SASL_SSL",
        'security_protocol = "SASL_SSL"\nssl_cafile = "{ca}"\nsasl_mechanism = "SCRAM-SHA-512"\n'
        'sasl_username = "{user}"\nsasl_password_file = "{secret_file}"\n',
        secret_file=PASSWORDS["SCRAM-SHA-512"],
    ),
    "mtls-encrypted-key-passphrase-file": Setup(
        "MTLS",
        TLS + 'ssl_certfile = "{cert}"\nssl_keyfile = "{encrypted_key}"\n'
        'ssl_password_file = "{secret_file}"\n',
        secret_file=KEY_PASSPHRASE,
    ),
    # a certificate for another name is fine once the operator turns the check off
    "ssl-check-hostname-off": Setup("WRONGHOST", TLS + "ssl_check_hostname = false\n"),
}

REFUSED = {
    "wrong-password": (
        Setup("SASL", sasl("SASL_PLAINTEXT", "SCRAM-SHA-256"), "not-the-password"),
        f"{AUTHENTICATION_FAILED}: SCRAM-SHA-256 as user '{USER}'",
    ),
    "unknown-user": (
        Setup("SASL_SSL", sasl("SASL_SSL", "PLAIN", user="nobody"), PASSWORDS["PLAIN"]),
        f"{AUTHENTICATION_FAILED}: PLAIN as user 'nobody'",
    ),
    "untrusted-ca": (
        Setup("SSL", 'security_protocol = "SSL"\nssl_cafile = "{untrusted_ca}"\n'),
        NOT_TRUSTED,
    ),
    "wrong-hostname": (
        Setup("WRONGHOST", TLS + "ssl_check_hostname = true\n"),
        f"{HOSTNAME_MISMATCH}: IP address mismatch, certificate is not valid for '127.0.0.1'",
    ),
    "expired-certificate": (Setup("EXPIRED", TLS), EXPIRED),
    "no-client-certificate": (Setup("MTLS", TLS), CLIENT_CERTIFICATE),
    "sasl-on-a-tls-listener": (
        Setup("SSL", sasl("SASL_SSL", "PLAIN"), PASSWORDS["PLAIN"]),
        "SASL: the listener does not accept a SASL login (check security_protocol)",
    ),
}


async def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The group's committed offset of partition 0 (admin API; joins no group)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(topic, 0)]
        )
    finally:
        await admin.close()
    found = offsets.get(TopicPartition(topic, 0))
    return None if found is None or found.offset < 0 else found.offset


def bridge_process(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kafka: SecureKafka,
    restate: RestateServer,
    setup: Setup,
    *,
    topic: str,
    group: str,
    dlq: str | None = None,
) -> BridgeProcess:
    proc = BridgeProcess(tmp_path, "bridge", env=setup.env())
    keep_log(request.node, proc.process.log_path)
    proc.write_routes(
        routes_toml(
            bootstrap=kafka.broker.address(setup.listener),
            ingress_url=restate.ingress_url,
            group_id=group,
            metrics_port=proc.metrics_port,
            routes=recorder(topic, body="{value.n}"),
            dead_letter_topic=dlq,
            kafka_extra=setup.lines(kafka.certs, tmp_path / "kafka-secret"),
        )
    )
    request.addfinalizer(proc.kill)
    return proc


@pytest.mark.parametrize("name", list(WORKING))
async def test_the_bridge_delivers_commits_and_dead_letters_over_a_secured_connection(
    name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    secure_kafka: SecureKafka,
    restate: RestateServer,
    client: Client,
) -> None:
    setup = WORKING[name]
    topic, dlq, group, key = unique(name), unique("dlq"), unique("g"), unique("k")
    await create_topics(secure_kafka.admin, [topic, dlq])
    values = [b'{"n": 1}', b"not json", b'{"n": 2}', b'{"n": 3}']
    await produce(secure_kafka.admin, topic, [Message(key.encode(), v) for v in values])

    bridge = bridge_process(
        request, tmp_path, secure_kafka, restate, setup, topic=topic, group=group, dlq=dlq
    )
    bridge.start()  # ready: in the group over the secured listener, and the ingress answers

    await until(recorded(client, key), lambda seen: seen == [1, 2, 3], "delivered in order")
    await until(
        lambda: committed(secure_kafka.admin, group, topic),
        lambda offset: offset == len(values),
        "the group committed at the partition end",
    )
    [dead] = await read_topic(secure_kafka.admin, dlq, expect=1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (key.encode(), b"not json")
    assert headers["bridge.offset"] == b"1"
    assert b"not JSON" in headers["bridge.error"], headers["bridge.error"]

    secrets = [s for s in (setup.password, setup.secret_file) if s is not None]
    served = [bridge.text(path) for path in ("/metrics", "/status.json", "/")]
    assert bridge.terminate() == 0
    log = bridge.log()
    assert " ERROR " not in log, log
    for secret in secrets:
        assert secret not in log
        assert not any(secret in text for text in served), "a secret on the listener"
        assert secret.encode() not in (dead.value or b"")
        assert not any(secret.encode() in v for _, v in dead.headers)


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_refused_connection_stops_the_bridge_with_one_line_and_exit_code_3(
    name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    secure_kafka: SecureKafka,
    restate: RestateServer,
) -> None:
    setup, cause = REFUSED[name]
    topic = unique(name)
    bridge = bridge_process(
        request, tmp_path, secure_kafka, restate, setup, topic=topic, group=unique("g")
    )
    error, log = bridge.refused(timeout=20)
    server = secure_kafka.broker.address(setup.listener)
    assert f"ERROR bridge: Kafka at {server}: {cause}" in error, error
    if setup.password is not None:
        assert setup.password not in log
