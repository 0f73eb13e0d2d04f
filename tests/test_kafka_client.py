"""bridge.consume.kafka: the TLS context, and ``refusal`` reading real exceptions.

The TLS failures are real: aiokafka's own connection code talks to a TLS server in a thread
(certificates from :mod:`tests.stack.tls`), so each exception is exactly what a broker's
handshake produces. The SASL errors are built as aiokafka builds them from a broker's answer
(``error_type(resp.error_message)``) with the messages Apache Kafka 4.4 sends; the integration
tests in ``test_kafka_security.py`` see them from the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from bridge import cli
from bridge.config import BridgeConfig, KafkaConfig, parse_config
from bridge.consume.kafka import (
    AUTHENTICATION_FAILED,
    CLIENT_CERTIFICATE,
    EXPIRED,
    HOSTNAME_MISMATCH,
    NOT_TRUSTED,
    KafkaRefused,
    check_security,
    kafka_options,
    refusal,
    ssl_context,
)
from bridge.worker import Bridge
from tests.stack.tls import KEY_PASSPHRASE, Certificates, Keystore, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        context: ssl.SSLContext = self.server.context  # type: ignore[attr-defined]
        # a refused handshake (OSError) is the point of most of these tests
        with (
            contextlib.suppress(OSError),
            context.wrap_socket(self.request, server_side=True) as conn,
        ):
            conn.settimeout(5)
            while data := conn.recv(65536):
                conn.sendall(data)  # an echo: a test sees its handshake accepted


@contextlib.contextmanager
def tls_server(keystore: Keystore, client_ca: Path | None = None) -> Iterator[str]:
    """A TLS server on a free port presenting ``keystore``; ``client_ca``: it requires a client
    certificate from that CA (as a listener with ``ssl.client.auth=required``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(keystore.cert, keystore.key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.context = context  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def tls_kafka(bootstrap: str, cafile: Path, **options: object) -> KafkaConfig:
    return KafkaConfig(
        bootstrap,
        security_protocol="SSL",
        ssl_cafile=str(cafile),
        **options,  # type: ignore[arg-type]
    )


async def connect_error(kafka: KafkaConfig) -> BaseException:
    """The exception aiokafka's connection code raises against ``kafka``'s first server."""
    host, _, port = kafka.bootstrap_servers.partition(":")
    options = kafka_options(kafka)
    del options["bootstrap_servers"]
    try:
        conn = await create_conn(host, int(port), request_timeout_ms=5000, **options)
    except Exception as exc:
        return exc
    conn.close()
    raise AssertionError("the connection was accepted")


async def handshake(kafka: KafkaConfig) -> None:
    """A TLS handshake with ``kafka``'s context that the server accepts (it answers a read)."""
    host, _, port = kafka.bootstrap_servers.partition(":")
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ssl_context(kafka))
    try:
        writer.write(b"ping")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
    finally:
        writer.close()


# -- TLS: what the bridge's side of the handshake refuses --------------------------------------


async def test_an_untrusted_certificate(certs: Certificates) -> None:
    with tls_server(certs.server) as server:
        exc = await connect_error(tls_kafka(server, certs.untrusted_ca))
    assert isinstance(exc, ssl.SSLCertVerificationError)
    assert (refusal(exc) or "").startswith(NOT_TRUSTED), refusal(exc)


async def test_a_certificate_for_another_host(certs: Certificates) -> None:
    with tls_server(certs.wrong_host) as server:
        by_ip = await connect_error(tls_kafka(server, certs.ca))
        by_name = await connect_error(tls_kafka(server.replace("127.0.0.1", "localhost"), certs.ca))
    for exc, host in ((by_ip, "127.0.0.1"), (by_name, "localhost")):
        cause = refusal(exc) or ""
        assert cause.startswith(HOSTNAME_MISMATCH), cause
        assert f"not valid for '{host}'" in cause


async def test_ssl_check_hostname_false_accepts_a_certificate_for_another_host(
    certs: Certificates,
) -> None:
    kafka = tls_kafka("127.0.0.1:1", certs.ca, ssl_check_hostname=False)
    assert ssl_context(kafka).check_hostname is False
    assert ssl_context(tls_kafka("127.0.0.1:1", certs.ca)).check_hostname is True
    with tls_server(certs.wrong_host) as server:
        await handshake(tls_kafka(server, certs.ca, ssl_check_hostname=False))


async def test_an_expired_certificate(certs: Certificates) -> None:
    with tls_server(certs.expired) as server:
        exc = await connect_error(tls_kafka(server, certs.ca))
    assert (refusal(exc) or "").startswith(EXPIRED), refusal(exc)


@pytest.mark.parametrize("attempt", range(5))
async def test_a_missing_client_certificate(certs: Certificates, attempt: int) -> None:
    """TLS 1.3: the handshake completes, the alert comes with the first read; a request sent
    meanwhile can turn it into a reset (``KafkaConnectionError`` from ``ConnectionResetError``),
    so the check reads the alert on a second connection that sends nothing: every time."""
    with tls_server(certs.server, client_ca=certs.ca) as server:
        exc = await connect_error(tls_kafka(server, certs.ca))
        assert isinstance(exc, KafkaConnectionError), repr(exc)
        with pytest.raises(KafkaRefused) as refused:
            await check_security(tls_kafka(server, certs.ca))
    assert refused.value.cause.startswith(CLIENT_CERTIFICATE), refused.value.cause


async def test_a_client_certificate_with_an_encrypted_key(certs: Certificates) -> None:
    kafka = tls_kafka(
        "127.0.0.1:1",
        certs.ca,
        ssl_certfile=str(certs.client.cert),
        ssl_keyfile=str(certs.client_encrypted_key),
        ssl_password=KEY_PASSPHRASE,
    )
    with tls_server(certs.server, client_ca=certs.ca) as server:
        await handshake(tls_kafka(server, certs.ca, **_client_files(kafka)))
    wrong = tls_kafka("127.0.0.1:1", certs.ca, **_client_files(kafka, "not-the-passphrase"))
    with pytest.raises(ssl.SSLError):  # never a prompt on the terminal
        ssl_context(wrong)


def _client_files(kafka: KafkaConfig, password: str | None = None) -> dict[str, object]:
    return {
        "ssl_certfile": kafka.ssl_certfile,
        "ssl_keyfile": kafka.ssl_keyfile,
        "ssl_password": password or kafka.ssl_password,
    }


# -- SASL: the broker's answers, as aiokafka raises them ---------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Authentication failed: Invalid username or password",  # PLAIN
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-256",
    ],
)
def test_a_refused_login(message: str) -> None:
    assert refusal(SaslAuthenticationFailed(message)) == AUTHENTICATION_FAILED


def test_sasl_on_a_listener_without_it_and_an_unsupported_mechanism() -> None:
    assert "does not accept a SASL login" in (refusal(IllegalSaslStateError(None)) or "")
    unsupported = UnsupportedSaslMechanismError(
        "Kafka broker does not support SCRAM-SHA-512 sasl mechanism. Enabled mechanisms are: "
        "['PLAIN']"
    )
    assert refusal(unsupported) == f"SASL: {unsupported.args[0]}"


# -- what is not a refusal: an unreachable or silent broker stays exit 1 -------------------------


async def test_unreachable_is_not_a_refusal() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exc = await connect_error(KafkaConfig(f"127.0.0.1:{port}"))
    assert isinstance(exc, ConnectionRefusedError)
    assert refusal(exc) is None
    await check_security(KafkaConfig(f"127.0.0.1:{port}"))  # returns: the consumer reports it


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        KafkaConnectionError("Connection at 127.0.0.1:9092 closed"),
        ConnectionResetError(),
    ],
)
def test_other_errors_are_not_refusals(exc: BaseException) -> None:
    assert refusal(exc) is None


def test_a_cause_is_found_through_the_chain_and_cycles_end() -> None:
    inner = SaslAuthenticationFailed("Authentication failed: Invalid username or password")
    outer = KafkaConnectionError("Unable to bootstrap")
    outer.__cause__ = inner
    assert refusal(outer) == AUTHENTICATION_FAILED
    a, b = KafkaConnectionError("a"), KafkaConnectionError("b")
    a.__context__, b.__context__ = b, a
    assert refusal(a) is None


async def test_every_server_is_tried_and_the_first_refusal_named(certs: Certificates) -> None:
    with (
        tls_server(certs.expired) as expired,
        tls_server(certs.wrong_host) as wrong_host,
        pytest.raises(KafkaRefused) as refused,
    ):
        await check_security(tls_kafka(f"127.0.0.1:1,{expired},{wrong_host}", certs.ca))
    assert refused.value.server == expired
    assert str(refused.value) == f"Kafka at {expired}: {refused.value.cause}"
    assert refused.value.cause.startswith(EXPIRED)


# -- the bridge: /readyz says why, run exits 3 with one line -----------------------------------


def bridge_config(tmp_path: Path, bootstrap: str, cafile: Path) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
security_protocol = "SSL"
ssl_cafile = "{cafile}"
[restate]
ingress_url = "http://127.0.0.1:9"
[metrics]
listen = "127.0.0.1:0"
[[routes]]
topic = "orders"
target = "service"
service = "S"
handler = "h"
""")
    return path


def load(path: Path) -> BridgeConfig:
    return parse_config(path.read_text(), path, {})


async def test_the_bridge_stops_and_readyz_says_why(tmp_path: Path, certs: Certificates) -> None:
    with tls_server(certs.server) as server:
        bridge = Bridge(load(bridge_config(tmp_path, server, certs.untrusted_ca)))
        assert bridge.readiness() == (False, "not yet in the Kafka consumer group")
        with pytest.raises(KafkaRefused) as refused:
            await asyncio.wait_for(bridge.run(asyncio.Event()), 20)
    ready, reason = bridge.readiness()
    assert not ready
    assert reason == str(refused.value)
    assert reason.startswith(f"Kafka at {server}: {NOT_TRUSTED}"), reason


def test_run_exits_3_with_one_error_line(
    tmp_path: Path,
    certs: Certificates,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RESTATE_URL", "KAFKA_BOOTSTRAP_SERVERS", "BRIDGE_METRICS_LISTEN"):
        monkeypatch.delenv(name, raising=False)
    with tls_server(certs.expired) as server:
        routes = bridge_config(tmp_path, server, certs.ca)
        assert cli.main(["run", "--routes", str(routes)]) == cli.EXIT_KAFKA_REFUSED
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.getMessage()) for r in errors] == [
        ("bridge", f"Kafka at {server}: {EXPIRED} (the broker's certificate; renew it)")
    ]
