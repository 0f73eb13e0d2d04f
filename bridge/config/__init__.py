"""routes.toml: parsed once into frozen, validated values.

Every problem in the file is collected, then raised together as one :class:`ConfigError` whose lines
read ``PATH:LINE: message`` (``$NAME: message`` for the environment). Only the CLI turns that into
an exit code. Reading never raises anything else, whatever the TOML document holds.

The scalar tables (``[kafka]``, ``[restate]``, ``[metrics]``, ``[dead_letter]``, ``[delivery]``) are
read from their dataclasses' own type hints: ``int`` is a positive integer, ``timedelta`` a
positive duration, ``Literal[...]`` one of its values, ``str`` a non-empty string, ``X | None`` an
optional ``X``; an ``Annotated`` :class:`Range` or :class:`Check` narrows a field. A new option is
one annotated field. Routes are read by small named rules (``_ROUTE_RULES``); rules that need the
whole file (a route reading the dead-letter topic, a delay beyond ``max_delay``) run after them.

Environment overrides and secrets are read here and nowhere else, from the injected ``env``:
``RESTATE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``, ``BRIDGE_METRICS_LISTEN`` (each overrides the file),
``BRIDGE_LOG_LEVEL``, ``RESTATE_AUTH_TOKEN``, and every secret: each from the variable its
``*_env`` option names or the file its ``*_file`` option names (at most one of the two).
"""

from .loader import (
    SecretFileError,
    check_log_level,
    ingress_ssl_context,
    load_config,
    parse_config,
    read_secret_file,
)
from .schema import (
    DEFAULT_IDEMPOTENCY_KEY,
    ORDERINGS,
    ROUTE_KEYS,
    SECTIONS,
    TARGETS,
    BatchConfig,
    Body,
    BridgeConfig,
    ConfigError,
    DeadLetterConfig,
    DeliveryConfig,
    KafkaConfig,
    Match,
    MetricsConfig,
    OnNull,
    Ordering,
    RestateConfig,
    RouteConfig,
    SchemaRegistryConfig,
    TargetKind,
    TracingConfig,
)

__all__ = [
    "DEFAULT_IDEMPOTENCY_KEY",
    "ORDERINGS",
    "ROUTE_KEYS",
    "SECTIONS",
    "TARGETS",
    "BatchConfig",
    "Body",
    "BridgeConfig",
    "ConfigError",
    "DeadLetterConfig",
    "DeliveryConfig",
    "KafkaConfig",
    "Match",
    "MetricsConfig",
    "OnNull",
    "Ordering",
    "RestateConfig",
    "RouteConfig",
    "SchemaRegistryConfig",
    "SecretFileError",
    "TargetKind",
    "TracingConfig",
    "check_log_level",
    "ingress_ssl_context",
    "load_config",
    "parse_config",
    "read_secret_file",
]
