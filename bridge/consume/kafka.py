"""How the bridge connects to Kafka: client options, and why a broker refused the connection.

aiokafka reports a refused TLS handshake or SASL login only in its own log line; its
``start()`` then raises a bare ``KafkaConnectionError("Unable to bootstrap ...")``. So before any
consumer or producer starts, :func:`check_security` opens one connection to the bootstrap servers
with the same options, and :func:`refusal` (the one place that reads aiokafka's and ``ssl``'s
exceptions) names the cause. Exceptions::

    KafkaRefused   the broker refused the connection's security (TLS or SASL): retrying cannot
                   help, the operator must fix the configuration (``run`` exits with code 3)

A broker that cannot be reached at all is not a refusal: the consumer's own start-up reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any

from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from ..config import KafkaConfig

if TYPE_CHECKING:
    from .oauth import OAuthLogin

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0
"""Seconds one server has to complete the TLS handshake, ``ApiVersions`` and the SASL login."""

AUTHENTICATION_FAILED = "authentication failed (wrong password or unknown user)"
NOT_TRUSTED = "TLS: the broker's certificate is not trusted"
HOSTNAME_MISMATCH = "TLS: hostname mismatch"
EXPIRED = "TLS: certificate expired"
NOT_YET_VALID = "TLS: certificate not yet valid"
CLIENT_CERTIFICATE = "TLS: the broker refused the client certificate"

# OpenSSL's X509_V_ERR_* codes that ssl.SSLCertVerificationError.verify_code carries
_UNTRUSTED_CODES = frozenset({2, 18, 19, 20, 21})
"""No issuer certificate, self-signed leaf, self-signed CA in the chain, no local issuer,
cannot verify the leaf: the CA file does not hold the broker's CA."""
_CERT_NOT_YET_VALID, _CERT_HAS_EXPIRED = 9, 10
_HOSTNAME_MISMATCH_CODES = frozenset({62, 64})
"""X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH."""
_CLIENT_CERT_ALERTS = (
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_REQUIRED",
    "ALERT_UNKNOWN_CA",
    "ALERT_HANDSHAKE_FAILURE",
)
"""TLS alerts a broker sends when it wants (another) client certificate."""


class KafkaRefused(Exception):
    """A broker refused the connection's security; ``str()`` is the one log line."""

    def __init__(self, server: str, cause: str) -> None:
        super().__init__(f"Kafka at {server}: {cause}")
        self.server = server
        self.cause = cause


def ssl_context(kafka: KafkaConfig) -> ssl.SSLContext:
    """The TLS context of an ``SSL`` / ``SASL_SSL`` connection: the CA file (else the system's),
    the client certificate, the key's passphrase, and ``ssl_check_hostname``."""
    context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile is not None:
        passphrase = kafka.ssl_password or ""  # a callable: OpenSSL never prompts on a terminal
        context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile, lambda: passphrase)
    return context


def kafka_options(kafka: KafkaConfig, login: OAuthLogin | None = None) -> dict[str, Any]:
    """Connection options of every Kafka client the bridge makes (consumer, producer, admin).
    ``OAUTHBEARER`` needs the process's ``login`` (:func:`bridge.consume.oauth.make_login`):
    every connection then shares its token."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism == "OAUTHBEARER":
        if login is None:
            raise ValueError("sasl_mechanism OAUTHBEARER needs the process's OAuthLogin")
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = login
    elif kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(kafka)
    return options


def refusal(exc: BaseException) -> str | None:
    """Why the broker refused the connection's security, or ``None`` when ``exc`` is no refusal
    (unreachable, timed out, closed for another reason). Follows ``__cause__`` / ``__context__``:
    aiokafka wraps the TLS alert a broker sends into a ``KafkaConnectionError``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = _refusal_of(current)
        if cause is not None:
            return cause
        current = current.__cause__ or current.__context__
    return None


def _refusal_of(exc: BaseException) -> str | None:
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return AUTHENTICATION_FAILED
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"SASL: {_message(exc)}"
    if isinstance(exc, IllegalSaslStateError):
        return "SASL: the listener does not accept a SASL login (check security_protocol)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, detail = exc.verify_code, exc.verify_message
        if code in _HOSTNAME_MISMATCH_CODES:
            return f"{HOSTNAME_MISMATCH}: {detail}"
        if code == _CERT_HAS_EXPIRED:
            return f"{EXPIRED} (the broker's certificate; renew it)"
        if code == _CERT_NOT_YET_VALID:
            return f"{NOT_YET_VALID} (the broker's certificate; check the clocks)"
        if code in _UNTRUSTED_CODES:
            return f"{NOT_TRUSTED} by ssl_cafile ({detail})"
        return f"TLS: the broker's certificate was refused: {detail}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
            return (
                f"{CLIENT_CERTIFICATE} (missing, or not from a CA it trusts; "
                f"check ssl_certfile): {reason}"
            )
        return f"TLS handshake failed: {reason or exc}"
    return None


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    servers = []
    for server in bootstrap_servers.split(","):
        server = server.strip()
        if server.startswith("["):  # [IPv6]:port
            host, _, rest = server[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif server.count(":") == 1:
            host, _, port = server.partition(":")
        else:  # a bare name or IPv6 address: Kafka's default port
            host, port = server, ""
        servers.append((host, int(port) if port else 9092))
    return servers


async def check_security(
    kafka: KafkaConfig, login: OAuthLogin | None = None, timeout: float = CHECK_TIMEOUT
) -> None:
    """Connect to the bootstrap servers, with TLS and SASL as configured, until one accepts.

    Raises :class:`KafkaRefused` when none accepts and one of them refused the connection's
    security; returns otherwise (also when none answers: the consumer reports that itself).
    With ``OAUTHBEARER`` the ``login`` must have started; a refused token is replaced by a new
    one and tried once more before it counts as a refusal.
    """
    try:
        await _check_security(kafka, login, timeout)
    except KafkaRefused as exc:
        if login is None or exc.cause != _with_login(AUTHENTICATION_FAILED, kafka, login):
            raise
        login.broker_refused()  # perhaps revoked or signed with a retired key: try a new one
        await _check_security(kafka, login, timeout)


_CONNECT_ERRORS = (OSError, KafkaError, TimeoutError, ValueError)
"""What a failed connection raises (ValueError: aiokafka's SCRAM client refusing the server's
answer)."""


async def _connect(host: str, port: int, options: dict[str, Any], timeout: float) -> Any:
    """One aiokafka connection to a server, TLS and SASL done (``options`` from
    :func:`kafka_options`, without the bootstrap servers)."""
    from aiokafka.conn import create_conn

    return await asyncio.wait_for(
        create_conn(host, port, request_timeout_ms=int(timeout * 1000), **options), timeout
    )


def _connection_options(kafka: KafkaConfig, login: OAuthLogin | None) -> dict[str, Any]:
    options = kafka_options(kafka, login)
    del options["bootstrap_servers"]
    return options


async def _check_security(kafka: KafkaConfig, login: OAuthLogin | None, timeout: float) -> None:
    options = _connection_options(kafka, login)
    refused: KafkaRefused | None = None
    for host, port in _servers(kafka.bootstrap_servers):
        server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            conn = await _connect(host, port, options, timeout)
        except _CONNECT_ERRORS as exc:
            log.debug("connecting to Kafka at %s failed: %r", server, exc)
            cause = refusal(exc)
            if cause is None and "ssl_context" in options and _closed(exc):
                cause = await _tls_verdict(host, port, options["ssl_context"], timeout)
            if cause is not None and refused is None:
                refused = KafkaRefused(server, _with_login(cause, kafka, login))
            continue
        try:
            if login is not None and await _closes_after_login(conn, timeout):
                refused = refused or KafkaRefused(
                    server, _with_login(AUTHENTICATION_FAILED, kafka, login)
                )
                continue
        finally:
            conn.close()
        return
    if refused is not None:
        raise refused


async def accepts_token(
    kafka: KafkaConfig, login: OAuthLogin, timeout: float = CHECK_TIMEOUT
) -> bool | None:
    """Whether a broker accepts the login's current token: one test login to the bootstrap
    servers, as :func:`check_security` makes. ``None`` when no broker answered (or no token
    came): unknown, not refused."""
    options = _connection_options(kafka, login)
    for host, port in _servers(kafka.bootstrap_servers):
        try:
            conn = await _connect(host, port, options, timeout)
        except _CONNECT_ERRORS as exc:
            if refusal(exc) == AUTHENTICATION_FAILED:
                return False
            continue
        try:
            return not await _closes_after_login(conn, timeout)
        finally:
            conn.close()
    return None


async def _closes_after_login(conn: Any, timeout: float) -> bool:
    """Whether the broker refuses the first request after an OAUTHBEARER login.

    A broker refuses a token with an error challenge (RFC 7628 §3.2.2) and waits for the
    client's acknowledgement; aiokafka 0.14 takes the challenge for success, so the refusal only
    shows at the next request: the broker answers it with an error (for ``Metadata``: no
    brokers, which a broker that accepted the login always lists) and closes the connection."""
    from aiokafka.protocol.metadata import MetadataRequest

    try:
        answer = await asyncio.wait_for(conn.send(MetadataRequest([])), timeout)
    except (KafkaError, OSError) as exc:
        log.debug("Kafka closed the connection after the OAUTHBEARER login: %r", exc)
        return _closed(exc)
    except TimeoutError:  # slow, not a refusal: the consumer will tell
        return False
    return not answer.brokers


def _closed(exc: BaseException) -> bool:
    """The broker closed a connection it had accepted (no refused or silent server)."""
    return isinstance(exc, KafkaConnectionError | ConnectionResetError | BrokenPipeError)


async def _tls_verdict(host: str, port: int, context: ssl.SSLContext, timeout: float) -> str | None:
    """Why a broker closed a TLS connection, from a handshake followed by a read, nothing sent.

    With TLS 1.3 the client's handshake ends before the broker has checked the client's
    certificate: the broker's alert comes later, and when the client has already sent a request
    the broker's close can reset the connection before the alert is read. Sending nothing lets
    the alert arrive."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), timeout
        )
    except (OSError, TimeoutError) as exc:
        return refusal(exc)
    try:
        await asyncio.wait_for(reader.read(1), timeout)
    except (OSError, TimeoutError) as exc:
        return refusal(exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1)
    return None


def _with_login(cause: str, kafka: KafkaConfig, login: OAuthLogin | None) -> str:
    if cause != AUTHENTICATION_FAILED:
        return cause
    if login is not None:
        return (
            f"the broker refused the OAUTHBEARER token from {login.source.name} (check the "
            "broker's expected issuer and audience, and that it can read the provider's keys)"
        )
    return f"{cause}: {kafka.sasl_mechanism} as user {kafka.sasl_username!r}"
