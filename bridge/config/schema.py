"""The routing file's schema: frozen, typed values, and the markers that narrow a field.

Every option is one annotated field with its docstring; :mod:`bridge.config.reading` reads the
scalar tables from these hints.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

from ..core.record import FieldPath, Format
from ..core.status_policy import StatusPolicy, StatusRange
from ..core.template import Template
from ..core.tokens import extensions_problem

TargetKind = Literal["service", "object", "workflow"]
Ordering = Literal["key", "partition", "none"]
OnNull = Literal["skip", "send", "dead_letter"]
TooOld = Literal["dead_letter", "block"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
TARGETS: tuple[TargetKind, ...] = get_args(TargetKind)
ORDERINGS: tuple[Ordering, ...] = get_args(Ordering)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_IDEMPOTENCY_KEY = "{topic}-{partition}-{offset}"
WORKFLOW_MAIN_HANDLERS = frozenset({"run", "Run"})
INT32_MAX = 2**31 - 1


class ConfigError(Exception):
    """Every problem found in a routes file, one ``PATH:LINE: message`` per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- field markers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of an ``int`` or ``timedelta`` field (the defaults are positive ones)."""

    low: Any
    high: Any


@dataclass(frozen=True)
class Check:
    """A rule of one field: ``rule(value)`` says what is wrong with a read value, or ``None``."""

    rule: Callable[[Any], str | None]


@dataclass(frozen=True)
class Hint:
    """How to write the field, for its "missing" and "wrong type" messages."""

    text: str


@dataclass(frozen=True)
class CommaList:
    """A ``str`` field that may also be written as a list of strings (joined with commas)."""


FROM_ENV = {"from_env": True}
"""Field metadata: resolved from the environment, never written in the file."""

POSITIVE_INT = Range(1, INT32_MAX)
POSITIVE_DURATION = Range(timedelta(microseconds=1), timedelta(days=3650))
"""Ten years: longer is a typo, and it keeps every timer far from ``timedelta``'s limits."""


def host_port_problem(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not (port.isascii() and port.isdigit()):
        return f"listen must be 'host:port', not {value!r}"
    if int(port) > 65535:
        return f"listen port must be from 0 to 65535 (0 picks a free port), not {port}"
    return None


def http_url_problem(value: str, key: str = "ingress_url") -> str | None:
    if not re.match(r"^https?://", value):
        return f"{key} must start with http:// or https://"
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError as exc:
        return f"{key} {value!r}: {exc}"
    if not parts.hostname:
        return f"{key} {value!r} has no host"
    return None


def admin_url_problem(value: str) -> str | None:
    return http_url_problem(value, "admin_url")


def token_endpoint_problem(value: str) -> str | None:
    return http_url_problem(value, "sasl_oauth_token_endpoint_url")


def issuer_url_problem(value: str) -> str | None:
    return http_url_problem(value, "sasl_oauth_issuer_url")


def token_provider_problem(value: str) -> str | None:
    module, sep, attribute = value.partition(":")
    names = [*module.split("."), *attribute.split(".")]
    if not sep or not all(n.isidentifier() for n in names):
        return f"sasl_oauth_token_provider must be 'package.module:factory', not {value!r}"
    return None


def ingress_urls_problem(value: str) -> str | None:
    """Each of a comma-separated list of ingress URLs is ``http(s)://host``, none twice."""
    urls = [u.strip() for u in value.split(",")]
    if len(urls) > 1 and not all(urls):
        return f"ingress_url: an empty entry in {value!r}; separate URLs with single commas"
    seen: set[str] = set()
    for url in urls:
        wrong = http_url_problem(url)
        if wrong is not None:
            return wrong
        if url.rstrip("/") in seen:
            return f"ingress_url {url!r} is listed twice"
        seen.add(url.rstrip("/"))
    return None


def bootstrap_servers_problem(value: str) -> str | None:
    for server in value.split(","):
        server = server.strip()
        if server.startswith("["):
            host, _, rest = server[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
            bad_rest = bool(rest) and port is None
        elif server.count(":") == 1:
            host, _, port = server.partition(":")
            bad_rest = False
        else:  # a bare name or IPv6 address: the default port
            host, port, bad_rest = server, None, False
        if not host or bad_rest or any(c.isspace() for c in host):
            return f"bootstrap_servers: bad server {server!r}; write 'host:port[,host:port]'"
        if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
            return f"bootstrap_servers: bad port in {server!r}; a port is 1 to 65535"
    return None


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name_problem(value: str) -> str | None:
    if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
        return f"{value!r} is not a Kafka topic name (1 to 249 of the characters a-z A-Z 0-9 . _ -)"
    return None


def variable_name_problem(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return f"{value!r} is not an environment variable name such as 'KAFKA_PASSWORD'"
    return None


def correlation_header_problem(value: str) -> str | None:
    if not re.fullmatch(r"[!-~]{1,255}", value):
        return (
            f"{value!r} is not a header name: 1 to 255 visible ASCII characters, no spaces "
            "(for example 'correlation-id')"
        )
    if value.lower().startswith("bridge."):
        return f"{value!r}: header names starting with 'bridge.' are the bridge's own reply headers"
    return None


def header_value_problem(value: str) -> str | None:
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        return f"{value!r} holds control characters, which an HTTP header cannot carry"
    return None


# -- the tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: Annotated[
        str,
        CommaList(),
        Hint("a string 'host:port[,host:port]' or a list"),
        Check(bootstrap_servers_problem),
    ]
    """The brokers: ``"host:port,host:port"`` or a list; a port is 1 to 65535. Overridden by
    ``KAFKA_BOOTSTRAP_SERVERS``."""
    group_id: str = "restate-bridge"
    """The consumer group; replicas with the same id share the partitions."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a group without a committed offset starts."""
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    """``read_committed`` never hands over records of aborted (or still open) transactions;
    ``read_uncommitted`` does."""
    client_id: str = "restate-bridge"
    """The client id the brokers see (in their logs and quotas)."""
    security_protocol: SecurityProtocol = "PLAINTEXT"
    """Plaintext, TLS (``SSL``), SASL, or SASL over TLS."""
    sasl_mechanism: SaslMechanism | None = None
    """``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` or ``OAUTHBEARER``; required with (and
    only with) a ``SASL_*`` protocol. ``OAUTHBEARER`` takes its tokens from an OpenID Connect
    token endpoint (``sasl_oauth_token_endpoint_url`` or ``sasl_oauth_issuer_url``, with
    ``sasl_oauth_client_id`` and a client secret) or from ``sasl_oauth_token_provider``."""
    sasl_username: str | None = None
    """The SASL user; required with a SASL mechanism, with ``sasl_password_env`` or
    ``sasl_password_file``."""
    sasl_password_env: Annotated[str | None, Check(variable_name_problem)] = None
    """The name of the environment variable holding the SASL password (never the password)."""
    sasl_password_file: str | None = None
    """Or a file holding the SASL password (a mounted secret: the whole file, trailing newline
    stripped)."""
    sasl_oauth_token_endpoint_url: Annotated[
        str | None, Hint("a URL 'https://host/path'"), Check(token_endpoint_problem)
    ] = None
    """``OAUTHBEARER``: the OpenID Connect provider's token endpoint; the bridge asks it for
    tokens with the client-credentials grant. Or ``sasl_oauth_issuer_url``."""
    sasl_oauth_issuer_url: Annotated[
        str | None, Hint("a URL 'https://host'"), Check(issuer_url_problem)
    ] = None
    """``OAUTHBEARER``: the issuer, whose discovery document
    (``/.well-known/openid-configuration``) names the token endpoint."""
    sasl_oauth_client_id: str | None = None
    """``OAUTHBEARER``: the client id, with ``sasl_oauth_client_secret_env`` or
    ``sasl_oauth_client_secret_file``."""
    sasl_oauth_client_secret_env: Annotated[str | None, Check(variable_name_problem)] = None
    """The variable holding the client secret (never the secret)."""
    sasl_oauth_client_secret_file: str | None = None
    """Or a file holding it; read again for each token, so a rotated secret needs no restart."""
    sasl_oauth_client_auth: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"
    )
    """How the client authenticates to the token endpoint: HTTP Basic, or the id and secret in
    the form."""
    sasl_oauth_scope: str | None = None
    """The ``scope`` asked for (space-separated), when the provider wants one."""
    sasl_oauth_audience: str | None = None
    """An ``audience`` parameter (Auth0, Keycloak and others name the API the token is for)."""
    sasl_oauth_resource: str | None = None
    """A ``resource`` parameter (RFC 8707 resource indicators)."""
    sasl_oauth_extensions: Annotated[
        str | None,
        CommaList(),
        Hint("'key=value' strings, a list or separated by commas"),
        Check(extensions_problem),
    ] = None
    """SASL extensions sent with each login (KIP-342), ``["logicalCluster=lkc-1",
    "identityPoolId=pool-2"]`` for Confluent Cloud."""
    sasl_oauth_cafile: str | None = None
    """PEM CA bundle for an ``https://`` token endpoint (default: the system's)."""
    sasl_oauth_token_provider: Annotated[str | None, Check(token_provider_problem)] = None
    """``OAUTHBEARER`` with tokens from your own code instead of a token endpoint:
    ``"package.module:factory"``. ``factory()`` is called once and returns a function (sync or
    async) that returns ``(token, expiry)``, the expiry in epoch milliseconds or seconds, an
    aware ``datetime`` or ``None`` (AWS MSK IAM: see the docs)."""
    ssl_cafile: str | None = None
    """PEM CA bundle that signed the brokers' certificates (default: the system's). The TLS
    files go only with ``SSL`` or ``SASL_SSL``; they must exist and load."""
    ssl_certfile: str | None = None
    """PEM client certificate, for a listener that asks for one (mTLS)."""
    ssl_keyfile: str | None = None
    """PEM private key of ``ssl_certfile``; needs ``ssl_certfile``."""
    ssl_password_env: Annotated[str | None, Check(variable_name_problem)] = None
    """The variable holding the passphrase of an encrypted ``ssl_keyfile``."""
    ssl_password_file: str | None = None
    """Or a file holding that passphrase."""
    ssl_check_hostname: bool = True
    """Whether the broker's certificate must name the host the bridge connects to (the host of
    ``bootstrap_servers`` and the ones the broker advertises); ``false`` still checks the CA and
    the dates."""
    session_timeout_ms: Annotated[int, Range(1000, INT32_MAX)] = 10_000
    """The group session timeout; heartbeats every third of it."""
    metadata_max_age_ms: Annotated[int, Range(1000, INT32_MAX)] = 10_000
    """How often topic metadata is refreshed: a new topic matching a ``topic_pattern`` is consumed
    within about this long (Kafka's own default, five minutes, is long to wait)."""
    fetch_max_bytes: int = 16 * 1024 * 1024
    """The most one fetch returns, all partitions together, in bytes; with the delivery limits
    the fetch sizes bound memory."""
    max_partition_fetch_bytes: int = 1024 * 1024
    """The most one fetch returns of one partition, in bytes."""
    sasl_password: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """Resolved from ``sasl_password_env`` or ``sasl_password_file``."""
    ssl_password: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """Resolved from ``ssl_password_env`` or ``ssl_password_file``."""
    sasl_oauth_client_secret: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """Resolved from ``sasl_oauth_client_secret_env`` or ``sasl_oauth_client_secret_file``."""


@dataclass(frozen=True)
class RestateConfig:
    ingress_url: Annotated[
        str,
        CommaList(),
        Hint("a URL 'http(s)://host:port', a list of them, or a comma-separated string"),
        Check(ingress_urls_problem),
    ] = "http://127.0.0.1:8080"
    """The ingress (``http://`` or ``https://`` with a host), or several nodes of one Restate
    cluster (a list, or URLs separated by commas): sends spread over the nodes that answer.
    Overridden by ``RESTATE_URL``."""
    request_timeout: timedelta = timedelta(seconds=30)
    """Per ``/send``; a timeout is retried."""
    max_connections: int = 128
    """The connection pool size."""
    token_env: Annotated[str | None, Check(variable_name_problem)] = None
    """The variable holding the ingress token, sent as ``Authorization: Bearer`` (default:
    ``RESTATE_AUTH_TOKEN``, when set)."""
    token_file: str | None = None
    """Or a file holding it; re-read when it changes, so a rotated token needs no restart."""
    ca_file: str | None = None
    """PEM CA bundle that signed an ``https://`` ingress's certificate (default: the system's).
    The TLS files go only with an ``https://`` ingress; they must exist and load."""
    cert_file: str | None = None
    """PEM client certificate (and its key, unless ``key_file``) for an ``https://`` ingress."""
    key_file: str | None = None
    """PEM private key of ``cert_file``, unencrypted."""
    token: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """From ``token_env``, ``token_file`` or ``RESTATE_AUTH_TOKEN``; sent as
    ``Authorization: Bearer``."""
    admin_url: Annotated[
        str | None,
        Hint("a URL 'http(s)://host:9070'"),
        Check(admin_url_problem),
    ] = None
    """Restate's admin API (port 9070 by default). ``check`` verifies every route against the
    services registered there (service, kind, handler, ``public``; the topics' retention against
    Restate's idempotency retention); ``run`` does too, at start, on each reload and every
    ``admin_check_interval``, and holds the invocations of a route that does not fit (instead of
    dead-lettering them after ``unknown_target_grace``). Overridden by ``RESTATE_ADMIN_URL``;
    ``check --restate-admin URL`` wins over both. TLS as for the ingress (``ca_file``,
    ``cert_file``, ``key_file``)."""
    admin_check_interval: timedelta = timedelta(seconds=30)
    """With ``admin_url``, how often ``run`` reads the registry again (also at start and on each
    reload): a route that does not fit it waits, and goes once a deployment makes it fit."""
    admin_token_env: Annotated[str | None, Check(variable_name_problem)] = None
    """The variable holding the admin API's token (default: the ingress token)."""
    admin_token_file: str | None = None
    """Or a file holding it."""
    admin_token: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """From ``admin_token_env`` or ``admin_token_file``, else the ingress token; sent as
    ``Authorization: Bearer`` to the admin API."""

    @property
    def ingress_urls(self) -> tuple[str, ...]:
        """Every ingress node's URL, in the order written."""
        return tuple(u.strip() for u in self.ingress_url.split(","))


@dataclass(frozen=True)
class MetricsConfig:
    listen: Annotated[str, Check(host_port_problem)] = "127.0.0.1:9464"
    """``host:port`` of the status page ``/``, ``/metrics``, ``/healthz`` and ``/readyz``; port 0
    picks a free one. Overridden by ``BRIDGE_METRICS_LISTEN`` (in a container:
    ``0.0.0.0:9464``)."""
    token_env: Annotated[str | None, Check(variable_name_problem)] = None
    """The variable holding a bearer token every path but ``/healthz``, ``/metrics`` and the
    status page's shell needs."""
    token_file: str | None = None
    """Or a file holding it."""
    token: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """Resolved from ``token_env`` or ``token_file``; ``None``: no token is asked for."""

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


def registry_url_problem(value: str) -> str | None:
    wrong = http_url_problem(value)
    return None if wrong is None else wrong.replace("ingress_url", "url")


@dataclass(frozen=True)
class SchemaRegistryConfig:
    """Where framed keys and values find their writers' schemas (table ``[schema_registry]``)."""

    url: Annotated[str | None, Check(registry_url_problem)] = None
    """The Confluent API's base, e.g. ``http://registry:8081`` or, for Apicurio,
    ``http://registry:8080/apis/ccompat/v7``; required when a route reads a framed format."""
    request_timeout: timedelta = timedelta(seconds=10)
    """Per request; a timeout is retried (the records wait, never dead-lettered)."""
    username: str | None = None
    """Basic authentication's user; its password from ``password_env`` or ``password_file``."""
    password_env: Annotated[str | None, Check(variable_name_problem)] = None
    """The variable holding the basic-authentication password."""
    password_file: str | None = None
    """Or a file holding it."""
    token_env: Annotated[str | None, Check(variable_name_problem)] = None
    """Or a bearer token, from this variable or ``token_file`` (not both with ``username``)."""
    token_file: str | None = None
    """Or a file holding the bearer token."""
    kafka_oauth_token: bool = False
    """Send the Kafka login's ``OAUTHBEARER`` token as the bearer token (a registry behind the
    same OpenID provider); needs ``sasl_mechanism = "OAUTHBEARER"``, and no other credentials."""
    ca_file: str | None = None
    """PEM CA bundle of an ``https://`` registry (default: the system's)."""
    validate_json: bool = False
    """Validate ``json_schema`` payloads against their schema with ``jsonschema`` (a failure is a
    dead letter)."""
    password: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """Resolved from ``password_env`` or ``password_file``."""
    token: str | None = field(default=None, repr=False, metadata=FROM_ENV)
    """Resolved from ``token_env`` or ``token_file``."""


@dataclass(frozen=True)
class DeadLetterConfig:
    topic: Annotated[str | None, Check(topic_name_problem)] = None
    """Where records that can never succeed go, with the reason in headers; without it such a
    record blocks its partition. No route may read it."""


@dataclass(frozen=True)
class DeliveryConfig:
    """How much is in flight and how failures are retried (table ``[delivery]``)."""

    max_in_flight: int = 256
    """Sends under way at once, all routes together."""
    max_pending_records: int = 4096
    """Records fetched but not finished; fetching pauses at this bound."""
    commit_interval: timedelta = timedelta(seconds=1)
    """How often the contiguous watermark is committed (also on revoke and shutdown)."""
    drain_timeout: timedelta = timedelta(seconds=30)
    """How long shutdown and revocation wait for sends under way."""
    retry_initial: timedelta = timedelta(milliseconds=100)
    """The first backoff of a retryable failure (exponential, with jitter); at most
    ``retry_max``."""
    retry_max: timedelta = timedelta(seconds=10)
    """The longest backoff, and the cap of any ``Retry-After``."""
    unknown_target_grace: Annotated[timedelta, Range(timedelta(0), timedelta(days=3650))] = (
        timedelta(seconds=60)
    )
    """How long a 404 for an unknown service/handler (maybe still deploying) is retried before
    dead-lettering; ``"0s"`` dead-letters at once."""
    max_delay: timedelta = timedelta(days=365)
    """The longest delay a record may ask for; a longer one is a dead letter, a longer constant
    route ``delay`` a file error."""
    max_pending_per_partition: int = 10_000
    """Records of one partition fetched but not yet committable (unfinished, or finished behind
    an unfinished one); that partition's fetching pauses at this bound. It is also the most a
    paused route's waiting records hold back in a partition other routes read."""
    max_waiting_replies: int = 1024
    """Invocations of reply routes accepted and waiting for their result, all routes together.
    A waiting reply holds a reply slot (and an attach connection of its own), not a send slot;
    at the bound, reply routes wait before sending."""
    reply_timeout: timedelta = timedelta(minutes=5)
    """The longest a reply route waits for a result after Restate accepted the record (a route's
    own ``reply_timeout`` wins); then the record is dead-lettered (or, without a dead-letter
    topic, blocks its partition), and the invocation keeps running in Restate."""


_SIZE = re.compile(r"\s*(\d+)\s*(B|KiB|MiB|KB|MB)?\s*")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024, "KB": 1000, "MB": 1000 * 1000}
MAX_BATCH_RECORDS = 10_000
MIN_BATCH_BYTES = 1024
MAX_BATCH_BYTES = 64 * 1024 * 1024
MAX_BATCH_WAIT = timedelta(seconds=10)


def parse_size(value: Any) -> int:
    """``"1MiB"``, ``"512KiB"``, ``"64KB"``, ``"1000B"`` or an integer, in bytes; ``ValueError``
    saying how to write it."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    found = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(
            f"{value!r} is not a size; write it like '1MiB', '512KiB', '64KB' or a number of bytes"
        )
    return int(found.group(1)) * _SIZE_UNITS[found.group(2)]


@dataclass(frozen=True)
class BatchConfig:
    """A route's ``batch = { max_records = 100, max_bytes = "1MiB", max_wait = "50ms" }``: one
    invocation carries up to ``max_records`` records as a JSON array of items."""

    max_records: int = 100
    """A batch closes when it holds this many records (1 to 10000)."""
    max_bytes: int = 1024 * 1024
    """... or when the next item would take its JSON body beyond this many bytes (1 KiB to
    64 MiB; a single larger item goes alone)."""
    max_wait: timedelta = timedelta(milliseconds=50)
    """... or this long after its first record arrived (0 to 10s)."""
    idempotent: bool = True
    """Send each batch with an idempotency key made of its records' coordinates (false with the
    route's ``idempotency_key = "none"``)."""


@dataclass(frozen=True)
class Match:
    field: FieldPath
    expected: str | int | float | bool


@dataclass(frozen=True)
class Body:
    """What a route sends: the raw value, a JSON sub-document, a rendered string, or nothing."""

    kind: Literal["value", "json_field", "template", "none"]
    template: Template | None = None


@dataclass(frozen=True)
class RouteConfig:
    """One ``[[routes]]`` entry: which records (topics, ``match``) become which invocations."""

    name: str
    """Unique; used in metrics, logs and dead-letter headers (default ``"Service.handler"``)."""
    line: int
    target: TargetKind
    """What ``service`` is: a ``service``, a virtual ``object`` or a ``workflow``."""
    service: str
    """The Restate service, object or workflow."""
    handler: str
    """Its handler."""
    topics: tuple[str, ...] = ()
    """The topics read (a route has exactly one of ``topic``, ``topics``, ``topic_pattern``);
    names use ``a-z A-Z 0-9 . _ -``."""
    topic_pattern: re.Pattern[str] | None = None
    """Or a regex every topic read matches in full; new matching topics are picked up within
    ``[kafka] metadata_max_age_ms``."""
    key: Template | None = None
    """Template of the object key or workflow id: required for objects and workflows, refused
    for services."""
    match: tuple[Match, ...] = ()
    """A table of field = value (``key``, ``header.NAME``, ``value.a.b``, ...): the route takes
    only records where every entry is equal (a string, number or boolean)."""
    delay: timedelta | Template | None = None
    """A duration (``"4s"``, ``"500ms"``, ``"1h30m"``, ``"PT2S"``) or a template
    (``"{header.delay}"``) Restate waits before running the invocation; not for workflows."""
    headers: tuple[str, ...] = ()
    """Kafka headers forwarded as HTTP headers to the handler: HTTP token names, never one the
    bridge sets (see the reserved names below)."""
    idempotency_key: Template | None = None
    """Template of the idempotency key (default ``"{topic}-{partition}-{offset}"``), or
    ``"none"``; the route name is appended so fan-out keys differ."""
    body: Body = field(default_factory=lambda: Body("value"))
    """``"{value}"`` (the default) sends the raw record value; ``"{value.path}"`` a JSON
    sub-document; ``"none"`` no body; any other template a JSON string."""
    content_type: Annotated[str, Check(header_value_problem)] = "application/json"
    """The content type of the body sent."""
    ordering: Ordering = "none"
    """``key``: in offset order per object key / workflow id (the default for objects and
    workflows); ``partition``: per partition of the route; ``none``: all in parallel (the
    default for services, which have no key)."""
    max_in_flight: int | None = None
    """This route's cap on sends under way, under ``[delivery] max_in_flight``; default
    unlimited."""
    on_null: OnNull = "send"
    """What a record with a null value (a tombstone) does: sent without a body or content type,
    skipped (counted as ``skipped``) or dead-lettered."""
    reply_topic: Annotated[str | None, Check(topic_name_problem)] = None
    """Where the handler's result goes, one reply record per source record; any target kind. Not
    the dead-letter topic, not a topic any route reads; the route needs an idempotency key (the
    default) or a workflow's main handler."""
    reply_correlation_header: Annotated[str | None, Check(correlation_header_problem)] = None
    """A header of the source record copied onto its reply (when the record has it): 1 to 255
    visible ASCII characters, not ``bridge.*``; only with ``reply_topic``."""
    reply_timeout: timedelta | None = None
    """The longest wait for the result; default ``[delivery] reply_timeout``; only with
    ``reply_topic``; a constant ``delay`` must be shorter."""
    value_format: Format = "json"
    """How the value is read: JSON text, raw bytes (no ``value.*`` fields), or framed by a schema
    registry serializer (``avro``, ``protobuf``, ``json_schema``: decoded into JSON data)."""
    key_format: Format = "raw"
    """How the key is read: raw bytes (``{key}`` as UTF-8), JSON text, or framed; any but
    ``raw`` allows ``{key.a.b}``."""
    batch: BatchConfig | None = None
    """Send records in batches: ``{ max_records = 100, max_bytes = "1MiB", max_wait = "50ms" }``
    (each key optional, these defaults) makes one invocation per batch, a JSON array of items;
    ``max_records`` 1 to 10000, ``max_bytes`` 1KiB to 64MiB (``B``, ``KB``, ``MB``, ``KiB``,
    ``MiB`` or an integer), ``max_wait`` 0 to 10s. Service and object routes only; not with
    ``reply_topic``, ``headers``, ``body``, ``content_type``, ``trace_context``, a templated
    ``delay`` or an ``idempotency_key`` template (``"none"`` is allowed). Default: one
    invocation per record."""
    retry_on: tuple[StatusRange, ...] = ()
    """Ingress statuses retried with backoff, without end: integers (``409``), classes
    (``"5xx"``, ``"4xx"``) or ranges (``"400-404"``), 400 to 599 only. A status may be in one
    of ``retry_on``, ``dead_letter_on``, ``block_on`` only; one no list names keeps the default
    treatment."""
    dead_letter_on: tuple[StatusRange, ...] = ()
    """Ingress statuses that dead-letter the record at once (or block without a dead-letter
    topic); the same forms."""
    block_on: tuple[StatusRange, ...] = ()
    """Ingress statuses that stop the partition at the record, even with a dead-letter topic;
    the same forms."""
    rate_limit: float | None = None
    """Records per second sent for this route (a token bucket per process), a number from
    ``0.001`` to ``1000000`` such as ``50`` or ``0.5``; default unlimited."""
    rate_limit_burst: int | None = None
    """Records that may go at once after a quiet spell; default one second's worth, at least 1;
    only with ``rate_limit``."""
    scope: Template | None = None
    """Template (``"{header.tenant}"``, ``"acme"``) of the Restate scope of every invocation
    (``/restate/scope/{scope}/send/...``): 1 to 36 of ``a-z A-Z 0-9 _ . -`` per record, else a
    dead letter; needs a server with scoped invocations enabled."""
    limit_key: Template | None = None
    """Template of the Restate limit key (``x-restate-limit-key``): one or two parts of the
    scope's characters joined by ``/`` (``"{header.tenant}/{value.user}"``); only with
    ``scope``."""

    validate_input: bool = False
    """Check each invocation's body against the handler's ``input_json_schema`` (read from
    Restate's admin API, ``[restate] admin_url``) before sending it: a body that does not match is
    dead-lettered with the JSON path and the rule (``$.amount: 'abc' is not of type 'integer'``).
    Needs the ``schemas`` extra (``jsonschema``)."""
    max_record_age: timedelta | None = None
    """Records older than this (by their Kafka timestamp, when they are read) are not sent: see
    ``on_record_too_old``. Set it below Restate's idempotency retention of the target (1 day by
    default): a replay of older records, after an offset reset or a restore, would run them
    again. ``None``: any age is sent."""
    on_record_too_old: TooOld = "dead_letter"
    """What a record older than ``max_record_age`` does: ``dead_letter`` (with the reason; blocks
    without a dead-letter topic) or ``block`` (holds its partition until an operator releases it:
    ``skip`` parks it, ``retry`` sends it after all)."""

    trace_context: bool = True
    """Forward the record's W3C ``traceparent`` / ``tracestate`` headers (when valid) to the
    ingress, listed in ``headers`` or not, so that Restate joins the producer's trace; an
    invalid one is dropped and counted, never a dead letter. Not for batch routes."""

    @property
    def statuses(self) -> StatusPolicy:
        """The route's ``retry_on`` / ``dead_letter_on`` / ``block_on`` lists as one policy."""
        return StatusPolicy(self.retry_on, self.dead_letter_on, self.block_on)

    def matches_topic(self, topic: str) -> bool:
        if topic in self.topics:
            return True
        return self.topic_pattern is not None and self.topic_pattern.fullmatch(topic) is not None


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry spans of the bridge itself (table ``[tracing]``)."""

    spans: bool = False
    """One span per record and route (``process``, kind CONSUMER) with a child span per
    ``/send`` attempt (kind CLIENT), from the global OpenTelemetry tracer; needs the ``otel``
    extra (``pip install 'restate-kafka-bridge[otel]'``; ``check`` says when it is missing).
    Off: no span work at all."""


@dataclass(frozen=True)
class BridgeConfig:
    path: Path
    kafka: KafkaConfig
    restate: RestateConfig
    metrics: MetricsConfig
    dead_letter: DeadLetterConfig
    delivery: DeliveryConfig
    routes: tuple[RouteConfig, ...]
    log_level: str = "INFO"
    """From ``BRIDGE_LOG_LEVEL``: DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    schema_registry: SchemaRegistryConfig = field(default_factory=SchemaRegistryConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for r in self.routes for t in r.topics))

    @property
    def topic_pattern(self) -> str | None:
        """One regex for every route's topics, when any route uses ``topic_pattern``."""
        patterns = [r.topic_pattern.pattern for r in self.routes if r.topic_pattern]
        if not patterns:
            return None
        patterns += [re.escape(t) for t in self.topics]
        return "^(?:" + "|".join(f"(?:{p})" for p in patterns) + ")$"


SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaConfig,
    "restate": RestateConfig,
    "metrics": MetricsConfig,
    "dead_letter": DeadLetterConfig,
    "delivery": DeliveryConfig,
    "schema_registry": SchemaRegistryConfig,
    "tracing": TracingConfig,
}
HINTS = {cls: get_type_hints(cls, include_extras=True) for cls in (*SECTIONS.values(), RouteConfig)}
ENV_OVERRIDES: dict[tuple[str, str], str] = {
    ("kafka", "bootstrap_servers"): "KAFKA_BOOTSTRAP_SERVERS",
    ("restate", "ingress_url"): "RESTATE_URL",
    ("restate", "admin_url"): "RESTATE_ADMIN_URL",
    ("metrics", "listen"): "BRIDGE_METRICS_LISTEN",
}
ROUTE_ONLY_KEYS = {
    "topic": "One topic: the short form of ``topics = [name]``.",
    "workflow_main": "Whether the route calls a workflow's main handler, which gets no idempotency "
    "key: the workflow id is its idempotency (default: true for a workflow's ``run`` / ``Run``).",
}
"""Route keys that are no field of :class:`RouteConfig`, and what they do."""
ROUTE_KEYS = frozenset(
    {"name", "topic", "topics", "topic_pattern", "target", "service", "handler", "key"}
    | {"match", "delay", "headers", "idempotency_key", "body", "content_type", "ordering"}
    | {"max_in_flight", "workflow_main", "on_null", "value_format", "key_format"}
    | {"reply_topic", "reply_correlation_header", "reply_timeout", "batch"}
    | {"retry_on", "dead_letter_on", "block_on", "rate_limit", "rate_limit_burst"}
    | {"scope", "limit_key", "trace_context", "max_record_age", "on_record_too_old"}
    | {"validate_input"}
)
