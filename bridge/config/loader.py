"""Loading a routes file: the TOML document, the environment, and rules across a table's fields."""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from ..extras import load_provider
from .reading import Problems, bare, closest, human, locate, read_section
from .routes import FILE_RULES, read_routes
from .schema import (
    LOG_LEVELS,
    SECTIONS,
    BridgeConfig,
    ConfigError,
    DeadLetterConfig,
    DeliveryConfig,
    KafkaConfig,
    MetricsConfig,
    RestateConfig,
    RouteConfig,
    SchemaRegistryConfig,
    TracingConfig,
)

# -- loading ----------------------------------------------------------------------------------


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    running: BridgeConfig | None = None,
) -> BridgeConfig:
    """Read and validate a routes file, with the environment overrides and secrets in ``env``.

    ``running`` is the config of a running bridge that reloads the file: a reload applies only
    the routes, which keep running with ``running``'s other tables, so the routes are also
    checked against those (a route reading the running dead-letter topic, say)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:  # no line to point at
        raise ConfigError([f"{path}: no such file"]) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([f"{path}: cannot read the routes file: {reason}"]) from exc
    except ValueError as exc:  # e.g. a NUL in the path
        raise ConfigError([f"{path}: cannot read the routes file: {exc}"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [f"{path}:{line}: the routes file is not UTF-8 text (byte {raw[exc.start]:#04x})"]
        ) from None
    return parse_config(text, path, env or {}, running=running)


def _toml(text: str, path: Path) -> dict[str, Any]:
    """The TOML document; a syntax error is a :class:`ConfigError` naming its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = found.group(1) if found else "1"
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError([f"{path}:{line}: TOML syntax error: {message}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}:1: TOML syntax error: nested too deeply"]) from None


def _sections(
    doc: dict[str, Any], env: Mapping[str, str], problems: Problems
) -> tuple[dict[str, Any], set[str]]:
    """Each table read by its schema, and the names of those read without a problem (rules
    across their fields can run)."""
    sections: dict[str, Any] = {}
    clean: set[str] = set()
    for name, cls in SECTIONS.items():
        before = len(problems.items)
        if name in doc or name != "kafka":
            sections[name] = read_section(cls, name, doc.get(name, {}), env, problems)
        if len(problems.items) == before:
            clean.add(name)
    return sections, clean


def parse_config(
    text: str, path: Path, env: Mapping[str, str], *, running: BridgeConfig | None = None
) -> BridgeConfig:
    doc = _toml(text, path)
    problems = Problems(path, locate(text))
    known = {*SECTIONS, "routes"}
    meant = set()  # tables a misspelt one stands for: not reported missing as well
    for name in doc:
        if name not in known:
            close = closest(name, known)
            meant.add(close)
            said = f"did you mean [{close}]?" if close else f"expected one of {sorted(known)}"
            problems.add((name,), f"unknown table [{bare(name)}]; {said}")
    if "kafka" not in doc and "kafka" not in meant:
        problems.add((), "missing table [kafka] with bootstrap_servers (the brokers)")
    sections, clean = _sections(doc, env, problems)
    kafka = cast(KafkaConfig | None, sections.get("kafka"))
    restate = cast(RestateConfig, sections["restate"] or RestateConfig())
    metrics = cast(MetricsConfig, sections["metrics"] or MetricsConfig())
    dead_letter = cast(DeadLetterConfig, sections["dead_letter"] or DeadLetterConfig())
    delivery = cast(DeliveryConfig, sections["delivery"] or DeliveryConfig())
    registry = cast(SchemaRegistryConfig, sections["schema_registry"] or SchemaRegistryConfig())
    tracing = cast(TracingConfig, sections["tracing"] or TracingConfig())
    if kafka is not None and "kafka" in clean:
        kafka = _kafka_rules(kafka, problems, env)
    if "delivery" in clean:
        _delivery_rules(delivery, problems)
    indexed = read_routes(doc.get("routes"), problems)
    for rule in FILE_RULES:
        rule(indexed, dead_letter, delivery, problems)
    if "restate" in clean:
        restate = _restate_rules(restate, problems, env)
    _validated_inputs(indexed, restate, problems)
    if "metrics" in clean:
        token = _secret(problems, "metrics", metrics, "token", "the listener's bearer token", env)
        metrics = dataclasses.replace(metrics, token=token)
    if "schema_registry" in clean:  # else its own problem says what is wrong with it
        registry = _schema_registry_rules(registry, problems, env, kafka)
        _framed_formats(indexed, registry, problems)
    if running is not None:
        _against_running(indexed, running, problems)
    if "tracing" in clean:
        _tracing_rules(tracing, problems)
    log_level = _log_level(env.get("BRIDGE_LOG_LEVEL") or "INFO", problems)
    if problems.items or kafka is None:
        raise ConfigError(problems.items)
    routes = tuple(route for _, route in indexed)
    return BridgeConfig(
        path,
        kafka,
        restate,
        metrics,
        dead_letter,
        delivery,
        routes,
        log_level,
        registry,
        tracing=tracing,
    )


def _against_running(
    routes: list[tuple[int, RouteConfig]], running: BridgeConfig, problems: Problems
) -> None:
    """The rules across the file once more, with the tables a reload keeps from ``running``."""
    kept = Problems(problems.path, problems.lines)
    for rule in FILE_RULES:
        rule(routes, running.dead_letter, running.delivery, kept)
    _framed_formats(routes, running.schema_registry, kept)
    for problem in dict.fromkeys(kept.items):
        if problem not in problems.items:
            problems.items.append(
                f"{problem} (the running [dead_letter], [delivery] and [schema_registry] "
                "stay in force until a restart)"
            )


def check_log_level(value: str) -> str | None:
    """What is wrong with a log level name (any case), or ``None``."""
    if value.upper() not in LOG_LEVELS:
        return f"log level must be one of {', '.join(n.lower() for n in LOG_LEVELS)}, not {value!r}"
    return None


def _log_level(value: str, problems: Problems) -> str:
    wrong = check_log_level(value)
    if wrong is not None:
        problems.env("BRIDGE_LOG_LEVEL", wrong)
        return "INFO"
    return value.upper()


# -- rules across fields of one table ---------------------------------------------------------

_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
_SSL_PROTOCOLS = ("SSL", "SASL_SSL")


_OAUTH_KEYS = (
    "sasl_oauth_token_endpoint_url",
    "sasl_oauth_issuer_url",
    "sasl_oauth_client_id",
    "sasl_oauth_client_secret_env",
    "sasl_oauth_client_secret_file",
    "sasl_oauth_scope",
    "sasl_oauth_audience",
    "sasl_oauth_resource",
    "sasl_oauth_extensions",
    "sasl_oauth_cafile",
    "sasl_oauth_token_provider",
)
_OAUTH_ENDPOINT_KEYS = (
    "sasl_oauth_client_id",
    "sasl_oauth_client_secret_env",
    "sasl_oauth_client_secret_file",
    "sasl_oauth_scope",
    "sasl_oauth_audience",
    "sasl_oauth_resource",
    "sasl_oauth_cafile",
)
"""What only a token endpoint uses (not ``sasl_oauth_token_provider``)."""


def _provider_rules(spec: str, kafka: KafkaConfig, problems: Problems) -> None:
    """``sasl_oauth_token_provider``: no token endpoint's settings; the factory imports (so
    ``check`` runs the module's top level, as ``run`` would)."""
    for key in _OAUTH_ENDPOINT_KEYS:
        if getattr(kafka, key) is not None:
            problems.add(
                ("kafka", key), f"{key} is for a token endpoint, not sasl_oauth_token_provider"
            )
    if kafka.sasl_oauth_client_auth != "client_secret_basic":
        problems.add(
            ("kafka", "sasl_oauth_client_auth"),
            "sasl_oauth_client_auth is for a token endpoint, not sasl_oauth_token_provider",
        )
    try:
        load_provider(spec)
    except ValueError as exc:
        problems.add(("kafka", "sasl_oauth_token_provider"), f"sasl_oauth_token_provider: {exc}")


def _oauth_rules(kafka: KafkaConfig, problems: Problems) -> None:
    """``OAUTHBEARER``: one source of tokens (a token endpoint, an issuer, or a provider), a
    client id and secret for an endpoint, no password; the provider must import."""
    at = ("kafka",)
    for key in ("sasl_username", "sasl_password_env", "sasl_password_file"):
        if getattr(kafka, key) is not None:
            problems.add(
                (*at, key),
                f"sasl_mechanism OAUTHBEARER logs in with a token, not a password: {key}",
            )
    sources = [
        key
        for key in (
            "sasl_oauth_token_endpoint_url",
            "sasl_oauth_issuer_url",
            "sasl_oauth_token_provider",
        )
        if getattr(kafka, key) is not None
    ]
    if not sources:
        problems.add(
            (*at, "sasl_mechanism"),
            "sasl_mechanism OAUTHBEARER needs sasl_oauth_token_endpoint_url, "
            "sasl_oauth_issuer_url or sasl_oauth_token_provider",
        )
        return
    if len(sources) > 1:
        problems.add((*at, sources[1]), f"set one of {' or '.join(sources)}, not both")
        return
    if kafka.sasl_oauth_token_provider is not None:
        _provider_rules(kafka.sasl_oauth_token_provider, kafka, problems)
        return
    if kafka.sasl_oauth_client_id is None:
        problems.add((*at, sources[0]), f"{sources[0]} needs sasl_oauth_client_id")
    if kafka.sasl_oauth_client_secret_env is None and kafka.sasl_oauth_client_secret_file is None:
        problems.add(
            (*at, sources[0]),
            f"{sources[0]} needs sasl_oauth_client_secret_env or sasl_oauth_client_secret_file",
        )
    if kafka.sasl_oauth_cafile is not None and not os.path.isfile(kafka.sasl_oauth_cafile):
        problems.add(
            (*at, "sasl_oauth_cafile"),
            f"sasl_oauth_cafile: no such file {kafka.sasl_oauth_cafile!r}",
        )
    elif kafka.sasl_oauth_cafile is not None:
        try:
            ssl.create_default_context(cafile=kafka.sasl_oauth_cafile)
        except (OSError, ssl.SSLError) as exc:
            problems.add(
                (*at, "sasl_oauth_cafile"),
                f"sasl_oauth_cafile {kafka.sasl_oauth_cafile!r} does not load: {exc}",
            )


def _kafka_rules(kafka: KafkaConfig, problems: Problems, env: Mapping[str, str]) -> KafkaConfig:
    """SASL and TLS settings that only make sense together; resolves the SASL password."""
    at = ("kafka",)
    sasl = kafka.security_protocol in _SASL_PROTOCOLS
    if kafka.sasl_mechanism is not None and not sasl:
        problems.add(
            (*at, "sasl_mechanism"),
            f"sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL, "
            f"not {kafka.security_protocol}",
        )
    if sasl and kafka.sasl_mechanism is None:
        problems.add(
            (*at, "security_protocol"),
            f"security_protocol {kafka.security_protocol} needs sasl_mechanism "
            "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)",
        )
    if kafka.sasl_mechanism == "OAUTHBEARER":
        _oauth_rules(kafka, problems)
    else:
        for key in _OAUTH_KEYS:
            if getattr(kafka, key) is not None:
                problems.add((*at, key), f"{key} is only used with sasl_mechanism OAUTHBEARER")
    for key in ("sasl_username", "sasl_password_env", "sasl_password_file"):
        if getattr(kafka, key) is not None and kafka.sasl_mechanism is None:
            problems.add((*at, key), f"{key} is only used with sasl_mechanism")
    if kafka.sasl_mechanism is not None and kafka.sasl_mechanism != "OAUTHBEARER":
        mechanism = kafka.sasl_mechanism
        if kafka.sasl_username is None:
            problems.add((*at, "sasl_mechanism"), f"sasl_mechanism {mechanism} needs sasl_username")
        if kafka.sasl_password_env is None and kafka.sasl_password_file is None:
            problems.add(
                (*at, "sasl_mechanism"),
                f"sasl_mechanism {mechanism} needs sasl_password_env or sasl_password_file",
            )
    password = _secret(problems, "kafka", kafka, "sasl_password", "the SASL password", env)
    for key in ("ssl_password_env", "ssl_password_file"):
        if getattr(kafka, key) is not None and kafka.ssl_certfile is None:
            problems.add((*at, key), f"{key} is a client key's passphrase; set ssl_certfile")
    passphrase = _secret(problems, "kafka", kafka, "ssl_password", "the key passphrase", env)
    client_secret = _secret(
        problems, "kafka", kafka, "sasl_oauth_client_secret", "the OAuth client secret", env
    )
    kafka = dataclasses.replace(
        kafka,
        sasl_password=password,
        ssl_password=passphrase,
        sasl_oauth_client_secret=client_secret,
    )
    _ssl_files(kafka, problems)
    return kafka


def _ssl_files(kafka: KafkaConfig, problems: Problems) -> None:
    files = {k: getattr(kafka, k) for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")}
    before = len(problems.items)
    for key, name in files.items():
        if name is None:
            continue
        if kafka.security_protocol not in _SSL_PROTOCOLS:
            problems.add(
                ("kafka", key),
                f"{key} is only used with security_protocol SSL or SASL_SSL, "
                f"not {kafka.security_protocol}",
            )
        elif not os.path.isfile(name):
            problems.add(("kafka", key), f"{key}: no such file {name!r}")
    if files["ssl_keyfile"] is not None and files["ssl_certfile"] is None:
        problems.add(("kafka", "ssl_keyfile"), "ssl_keyfile needs ssl_certfile (the certificate)")
    if kafka.security_protocol in _SSL_PROTOCOLS and len(problems.items) == before:
        try:
            context = ssl.create_default_context(cafile=files["ssl_cafile"])
            if files["ssl_certfile"] is not None:
                context.load_cert_chain(
                    files["ssl_certfile"], files["ssl_keyfile"], _passphrase(kafka.ssl_password)
                )
        except (ssl.SSLError, OSError, ValueError) as exc:
            problems.add(("kafka", "security_protocol"), f"TLS files do not load: {exc}")


def _passphrase(password: str | None) -> Callable[[], str]:
    """For ``load_cert_chain``: never ``None``, which makes OpenSSL ask on the terminal."""
    return lambda: password or ""


def _restate_rules(restate: RestateConfig, problems: Problems, env: Mapping[str, str]) -> Any:
    """The ingress token, and the TLS files of an ``https://`` ingress (they must load)."""
    token = _secret(
        problems,
        "restate",
        restate,
        "token",
        "the ingress token",
        env,
        default_env="RESTATE_AUTH_TOKEN",
    )
    admin_token = _secret(problems, "restate", restate, "admin_token", "the admin API's token", env)
    files = {k: getattr(restate, k) for k in ("ca_file", "cert_file", "key_file")}
    urls = [*restate.ingress_urls, *([restate.admin_url] if restate.admin_url else [])]
    before = len(problems.items)
    for key, name in files.items():
        if name is None:
            continue
        if not any(url.startswith("https://") for url in urls):
            problems.add(("restate", key), f"{key} is only used with an https:// ingress_url")
        elif not os.path.isfile(name):
            problems.add(("restate", key), f"{key}: no such file {name!r}")
    if files["key_file"] is not None and files["cert_file"] is None:
        problems.add(("restate", "key_file"), "key_file needs cert_file (the client certificate)")
    if len(problems.items) == before and any(files.values()):
        try:
            ingress_ssl_context(dataclasses.replace(restate, token=None))
        except (ssl.SSLError, OSError, ValueError) as exc:
            problems.add(("restate", "ca_file"), f"TLS files do not load: {exc}")
    return dataclasses.replace(restate, token=token, admin_token=admin_token or token)


def _schema_registry_rules(
    registry: SchemaRegistryConfig,
    problems: Problems,
    env: Mapping[str, str],
    kafka: KafkaConfig | None,
) -> SchemaRegistryConfig:
    """Credentials (basic, bearer or the Kafka login's token; one of them), the CA file;
    resolves the secrets."""
    at = ("schema_registry",)
    oauth = kafka is not None and kafka.sasl_mechanism == "OAUTHBEARER"
    if registry.kafka_oauth_token and not oauth:
        problems.add(
            (*at, "kafka_oauth_token"),
            'kafka_oauth_token needs [kafka] sasl_mechanism = "OAUTHBEARER"',
        )
    if registry.url is None:
        for key, value in vars(registry).items():
            if key not in ("url", "request_timeout", "validate_json") and value not in (
                None,
                False,
            ):
                problems.add((*at, key), f"{key} is only used with [schema_registry] url")
        return registry
    basic = registry.password_env is not None or registry.password_file is not None
    bearer = registry.token_env is not None or registry.token_file is not None
    if registry.kafka_oauth_token and (basic or bearer or registry.username is not None):
        problems.add(
            (*at, "kafka_oauth_token"),
            "kafka_oauth_token sends the Kafka login's token: no username or token besides it",
        )
    if registry.username is not None and ":" in registry.username:
        problems.add((*at, "username"), "username cannot hold ':' (basic authentication)")
    if registry.username is not None and not basic:
        problems.add((*at, "username"), "username needs password_env or password_file")
    if basic and registry.username is None:
        key = "password_env" if registry.password_env is not None else "password_file"
        problems.add((*at, key), f"{key} needs username (basic authentication)")
    if bearer and (basic or registry.username is not None):
        key = "token_env" if registry.token_env is not None else "token_file"
        problems.add(
            (*at, key), "use either basic authentication (username) or a bearer token, not both"
        )
    password = _secret(problems, "schema_registry", registry, "password", "the password", env)
    token = _secret(problems, "schema_registry", registry, "token", "the bearer token", env)
    if registry.ca_file is not None:
        if not registry.url.startswith("https://"):
            problems.add((*at, "ca_file"), "ca_file is only used with an https:// url")
        else:
            try:
                ssl.create_default_context(cafile=registry.ca_file)
            except (ssl.SSLError, OSError, ValueError) as exc:
                problems.add((*at, "ca_file"), f"ca_file does not load: {exc}")
    return dataclasses.replace(registry, password=password, token=token)


def _framed_formats(
    routes: list[tuple[int, RouteConfig]], registry: SchemaRegistryConfig, problems: Problems
) -> None:
    """A framed format needs ``[schema_registry] url`` and the ``[schemas]`` extra."""
    from ..schemas import FRAMED_FORMATS, missing_extra

    missing = None
    for index, route in routes:
        for key in ("value_format", "key_format"):
            fmt = getattr(route, key)
            if fmt not in FRAMED_FORMATS:
                continue
            if registry.url is None:
                problems.add(
                    ("routes", index, key),
                    f"{key} = {fmt!r} needs a schema registry: add [schema_registry] url",
                )
            missing = missing or missing_extra()
            if missing is not None:
                problems.add(
                    ("routes", index, key),
                    f"{key} = {fmt!r} needs {missing}, which is not installed: "
                    "pip install 'restate-kafka-bridge[schemas]'",
                )


def _validated_inputs(
    routes: list[tuple[int, RouteConfig]], restate: RestateConfig, problems: Problems
) -> None:
    """``validate_input`` reads the schemas from Restate's admin API, with ``jsonschema``."""
    from ..extras import missing_packages

    for index, route in routes:
        if not route.validate_input:
            continue
        where = ("routes", index, "validate_input")
        if restate.admin_url is None:
            problems.add(
                where,
                "validate_input = true reads the handlers' input schemas from Restate's admin "
                "API: add [restate] admin_url (or set RESTATE_ADMIN_URL)",
            )
        if (missing := missing_packages({"jsonschema": "jsonschema"})) is not None:
            problems.add(
                where,
                f"validate_input = true needs {missing}, which is not installed: "
                "pip install 'restate-kafka-bridge[schemas]'",
            )


def _tracing_rules(tracing: TracingConfig, problems: Problems) -> None:
    """Spans need the OpenTelemetry API (the ``otel`` extra)."""
    from ..tracing import missing_extra

    if tracing.spans and (missing := missing_extra()) is not None:
        problems.add(
            ("tracing", "spans"),
            f"spans = true needs {missing}, which is not installed: "
            "pip install 'restate-kafka-bridge[otel]'",
        )


def ingress_ssl_context(restate: RestateConfig) -> ssl.SSLContext | None:
    """The TLS context of an ``https://`` ingress with ``ca_file`` / ``cert_file``; ``None`` when
    the defaults (the system's CAs, no client certificate) do."""
    if restate.ca_file is None and restate.cert_file is None:
        return None
    context = ssl.create_default_context(cafile=restate.ca_file)
    if restate.cert_file is not None:
        context.load_cert_chain(restate.cert_file, restate.key_file, _passphrase(None))
    return context


# -- secrets ----------------------------------------------------------------------------------


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message says why, never what it holds."""


def read_secret_file(path: str) -> str:
    """A secret kept in a file, as Kubernetes mounts one: the whole file, one trailing newline
    (``\\n`` or ``\\r\\n``) stripped. Raises :class:`SecretFileError` for a file that is
    missing, unreadable, empty, not UTF-8 or holds more than one line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretFileError(f"cannot read {path!r}: {reason}") from None
    except ValueError:  # a NUL in the path
        raise SecretFileError(f"cannot read {path!r}: not a file name") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{path!r} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise SecretFileError(f"{path!r} is empty")
    if _control_characters(text):
        raise SecretFileError(f"{path!r} holds control characters or more than one line")
    return text


def _control_characters(text: str) -> bool:
    return any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text)


def _secret(
    problems: Problems,
    section: str,
    table: Any,
    name: str,
    what: str,
    env: Mapping[str, str],
    *,
    default_env: str | None = None,
) -> str | None:
    """The secret ``name`` of ``table``: from the variable ``{name}_env`` names, or the file
    ``{name}_file`` names (at most one), else from ``default_env`` when that is set."""
    env_key, file_key = f"{name}_env", f"{name}_file"
    variable, path = getattr(table, env_key), getattr(table, file_key)
    if variable is not None and path is not None:
        problems.add((section, file_key), f"set {env_key} or {file_key} ({what}), not both")
        return None
    if path is not None:
        try:
            return read_secret_file(path)
        except SecretFileError as exc:
            problems.add((section, file_key), f"{file_key}: {exc}")
            return None
    named = variable or default_env
    value = env.get(named) or None if named is not None else None
    if value is None:
        if variable is not None:
            problems.env(variable, f"unset or empty, but [{section}] {env_key} names it as {what}")
        return None
    if _control_characters(value):
        problems.env(cast(str, named), f"holds control characters; {what} is one line")
        return None
    return value


def _delivery_rules(delivery: DeliveryConfig, problems: Problems) -> None:
    if delivery.retry_initial > delivery.retry_max:
        problems.add(
            ("delivery", "retry_initial"),
            f"retry_initial ({human(delivery.retry_initial)}) must not be longer than "
            f"retry_max ({human(delivery.retry_max)})",
        )
