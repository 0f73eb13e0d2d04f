"""Every metric the bridge exports, in one registry passed around explicitly.

Names and labels are a contract: dashboards and alert rules depend on them. Labels stay of low
cardinality (topic, partition, route, outcome, reason), never keys or offsets. Per-partition
series exist only for the partitions the process owns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

OUTCOMES = ("accepted", "duplicate", "dead_lettered", "skipped", "unrouted")
RELEASE_ACTIONS = ("retry", "skip")
REPLY_STATUSES = ("ok", "error")
REPLY_WAIT_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
INVOCATION_OUTCOMES = ("accepted", "duplicate", "dead_lettered")
RELOAD_OUTCOMES = ("applied", "invalid", "failed")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

del GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR  # we register our own, per registry


class Metrics:
    """The bridge's metrics; ``registry`` defaults to a fresh one (tests make many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.messages = Counter(
            "restate_bridge_messages",
            "Kafka records (per route) by outcome: accepted, duplicate, dead_lettered, skipped "
            '(on_null = skip), unrouted (route "").',
            ["topic", "route", "outcome"],
            registry=registry,
        )
        self.ingress_latency = Histogram(
            "restate_bridge_ingress_latency_seconds",
            "Time for the ingress to accept one /send (the successful attempt).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ingress_errors = Counter(
            "restate_bridge_ingress_errors",
            "Failed /send attempts by reason (connect, timeout, http_429, http_5xx, http_404, ...)",
            ["route", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "restate_bridge_retries",
            "Send attempts repeated after a retryable failure.",
            ["route"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "restate_bridge_in_flight",
            "Sends waiting for the ingress's answer right now.",
            ["route"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "restate_bridge_consumer_lag",
            "Records in the partition not yet fetched: high watermark minus position.",
            ["topic", "partition"],
            registry=registry,
        )
        self.committed_lag = Gauge(
            "restate_bridge_committed_lag",
            "Records in the partition not yet committed: high watermark minus committed offset "
            "(what Kafka's tools show as the group's lag).",
            ["topic", "partition"],
            registry=registry,
        )
        self.oldest_unfinished_age = Gauge(
            "restate_bridge_oldest_unfinished_age_seconds",
            "Age of the partition's oldest fetched and unfinished record, since it was fetched "
            "(0 when none): head-of-line blocking.",
            ["topic", "partition"],
            registry=registry,
        )
        self.committed_offset = Gauge(
            "restate_bridge_committed_offset",
            "The last offset committed to Kafka (the next record to consume).",
            ["topic", "partition"],
            registry=registry,
        )
        self.ingress_up = Gauge(
            "restate_bridge_ingress_up",
            "1 when the Restate ingress answers (at least one of its nodes), 0 while it is "
            "unreachable.",
            registry=registry,
        )
        self.ingress_node_up = Gauge(
            "restate_bridge_ingress_node_up",
            "1 while this ingress node answers, 0 while it is down (sends go to the other nodes).",
            ["node"],
            registry=registry,
        )
        self.ingress_node_sends = Counter(
            "restate_bridge_ingress_node_sends",
            "/send attempts made to this ingress node (accepted or not).",
            ["node"],
            registry=registry,
        )
        self.pending_records = Gauge(
            "restate_bridge_pending_records",
            "Records fetched and not yet finished (bounded by delivery.max_pending_records).",
            registry=registry,
        )
        self.partition_blocked = Gauge(
            "restate_bridge_partition_blocked",
            "1 when a partition is stopped at a record that can never succeed and has no "
            "dead-letter topic to go to.",
            ["topic", "partition"],
            registry=registry,
        )
        self.commits = Counter(
            "restate_bridge_commits",
            "Offset commits to Kafka, by result (ok, failed).",
            ["result"],
            registry=registry,
        )
        self.dead_letter_errors = Counter(
            "restate_bridge_dead_letter_errors",
            "Failed attempts to produce to the dead-letter topic (retried).",
            registry=registry,
        )

        self.replies = Counter(
            "restate_bridge_replies",
            "Reply records produced, by status (ok: the handler's output, error: its terminal "
            "error).",
            ["route", "status"],
            registry=registry,
        )
        self.reply_errors = Counter(
            "restate_bridge_reply_errors",
            "Failed attempts on the reply path by reason (attach_connect, attach_timeout, "
            "attach_http_5xx, reply_timeout, topic_missing, produce, produce_refused, ...).",
            ["route", "reason"],
            registry=registry,
        )
        self.reply_wait = Histogram(
            "restate_bridge_reply_wait_seconds",
            "Time from Restate accepting a record of a reply route to its result being known.",
            ["route"],
            buckets=REPLY_WAIT_BUCKETS,
            registry=registry,
        )
        self.waiting_replies = Gauge(
            "restate_bridge_waiting_replies",
            "Accepted invocations of reply routes whose reply is not produced yet (bounded by "
            "delivery.max_waiting_replies).",
            registry=registry,
        )

        self.batch_size = Histogram(
            "restate_bridge_batch_size",
            "Records per batch invocation of a batch route, as the batch closed.",
            ["route"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.invocations = Counter(
            "restate_bridge_invocations",
            "Invocations of batch routes (one per batch; a batch refused whole is retried as "
            "batches of one) by outcome: accepted, duplicate, dead_lettered. Records are counted "
            "in restate_bridge_messages_total.",
            ["route", "outcome"],
            registry=registry,
        )

        self.decode_failures = Counter(
            "restate_bridge_decode_failures",
            "Framed keys and values that cannot be decoded (each a dead letter, or a blocked "
            "partition), by reason: no_magic_byte, unknown_schema, bad_schema, bad_payload, "
            "wrong_format.",
            ["topic", "field", "format", "reason"],
            registry=registry,
        )
        self.schema_registry_requests = Counter(
            "restate_bridge_schema_registry_requests",
            "Requests to the schema registry, by result: ok, not_found, error (retried).",
            ["result"],
            registry=registry,
        )
        self.schema_cache_hits = Counter(
            "restate_bridge_schema_cache_hits",
            "Framed keys and values whose schema was already cached (no request).",
            registry=registry,
        )
        self.schema_registry_up = Gauge(
            "restate_bridge_schema_registry_up",
            "1 while every schema fetched records need could be had, 0 while the registry is "
            "unreachable (fetching pauses).",
            registry=registry,
        )

        self.reloads = Counter(
            "restate_bridge_reloads",
            "Reloads of the routing file (SIGHUP or POST /admin/reload) by outcome: applied, "
            "invalid (the file has problems; the previous routes go on), failed.",
            ["outcome"],
            registry=registry,
        )
        for reload_outcome in RELOAD_OUTCOMES:
            self.reloads.labels(reload_outcome)
        self.config_reload_timestamp = Gauge(
            "restate_bridge_config_reload_timestamp_seconds",
            "Unix time the routes in force were loaded: at start, then at each applied reload.",
            registry=registry,
        )
        self.rate_limit = Gauge(
            "restate_bridge_rate_limit_records_per_second",
            "A route's rate_limit in records per second (0: unlimited).",
            ["route"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "restate_bridge_rate_limited",
            "Records that waited for their route's rate limit before being sent.",
            ["route"],
            registry=registry,
        )
        self.rate_limit_wait = Counter(
            "restate_bridge_rate_limit_wait_seconds",
            "Seconds sends (a batch counts once) waited for their route's rate limit.",
            ["route"],
            registry=registry,
        )
        self.trace_context_dropped = Counter(
            "restate_bridge_trace_context_dropped",
            "traceparent / tracestate record headers not forwarded because they break the W3C "
            "Trace Context rules (the record itself is sent).",
            ["route"],
            registry=registry,
        )
        self.route_paused = Gauge(
            "restate_bridge_route_paused",
            "1 while the operator has paused the route (its invocations wait, nothing new is "
            "sent), else 0.",
            ["route"],
            registry=registry,
        )
        self.topic_paused = Gauge(
            "restate_bridge_topic_paused",
            "1 while the operator has paused the topic (not fetched, its invocations wait), "
            "else 0.",
            ["topic"],
            registry=registry,
        )
        self.partition_paused = Gauge(
            "restate_bridge_partition_paused",
            "1 while fetching of this owned partition is stopped by an operator's pause (of its "
            "topic, or of every route that reads it).",
            ["topic", "partition"],
            registry=registry,
        )
        self.route_unfit = Gauge(
            "restate_bridge_route_unfit",
            "1 while the route does not fit what Restate has registered (no such service or "
            "handler, the wrong kind, a private handler; needs [restate] admin_url): its "
            "invocations wait, nothing is sent or dead-lettered. Else 0.",
            ["route"],
            registry=registry,
        )
        self.past_dedup_window = Counter(
            "restate_bridge_records_past_dedup_window",
            "Records read for the route when older than the time Restate remembers its target's "
            "idempotency keys (needs [restate] admin_url): sent again, they would run again "
            "if they ran before (a replay after an offset reset or a restore).",
            ["route"],
            registry=registry,
        )
        self.inputs_refused = Counter(
            "restate_bridge_inputs_refused",
            "Records of a validate_input route whose body the handler's input_json_schema "
            "refuses: dead-lettered (or held without a dead-letter topic) instead of sent.",
            ["route"],
            registry=registry,
        )
        self.restate_admin_up = Gauge(
            "restate_bridge_restate_admin_up",
            "1 when the last read of Restate's admin API (the registry the routes are checked "
            "against) succeeded, else 0.",
            registry=registry,
        )
        self.kafka_token_up = Gauge(
            "restate_bridge_kafka_token_up",
            "OAUTHBEARER: 1 while the bridge holds a valid Kafka token, the last request for one "
            "succeeded and the brokers accept it; 0 while the token endpoint (or provider) fails "
            "or the brokers keep refusing the tokens (/readyz says which).",
            ["source"],
            registry=registry,
        )
        self.kafka_token_requests = Counter(
            "restate_bridge_kafka_token_requests",
            "OAUTHBEARER: requests for a Kafka token by outcome: ok, failed (retried), refused "
            "(asking again cannot help: a wrong client secret, an unknown client or scope).",
            ["source", "outcome"],
            registry=registry,
        )
        self.kafka_token_broker_refusals = Counter(
            "restate_bridge_kafka_token_broker_refusals",
            "OAUTHBEARER: times Kafka connections kept closing right after logging in with one "
            "token (a broker refusing it), each answered with a new token.",
            ["source"],
            registry=registry,
        )
        self.kafka_token_expiry = Gauge(
            "restate_bridge_kafka_token_expiry_timestamp_seconds",
            "OAUTHBEARER: when the current Kafka token expires (Unix time; 0 when unknown).",
            ["source"],
            registry=registry,
        )
        self.releases = Counter(
            "restate_bridge_releases",
            "Blocked partitions released by the operator, by action: retry, skip.",
            ["action"],
            registry=registry,
        )

        self._message_counters: dict[tuple[str, str, str], Counter] = {}
        self._latency_histograms: dict[str, Histogram] = {}
        self._in_flight_gauges: dict[str, Gauge] = {}
        self._rate_limit_routes: set[str] = set()

    # -- the per-record series, their children cached ---------------------------------------
    # ``labels()`` checks and stringifies its values and takes a lock on every call; the hot
    # path asks for the same few children (never removed) for every record.

    def kafka_token_fetched(self, outcome: str, expires_at: float | None, source: str) -> None:
        """A request for a Kafka token ended (:class:`bridge.consume.oauth.LoginMetrics`)."""
        self.kafka_token_requests.labels(source, outcome).inc()
        if outcome == "ok":
            self.kafka_token_expiry.labels(source).set(expires_at or 0)

    def kafka_token_refused_by_broker(self, source: str) -> None:
        """Connections kept closing right after logging in with one token."""
        self.kafka_token_broker_refusals.labels(source).inc()

    def kafka_login_state(self, source: str, up: Callable[[], bool]) -> None:
        """``restate_bridge_kafka_token_up`` reads ``up()`` at each scrape."""
        self.kafka_token_up.labels(source).set_function(lambda: 1.0 if up() else 0.0)

    def message_counter(self, topic: str, route: str, outcome: str) -> Counter:
        """``messages.labels(topic, route, outcome)``, cached."""
        key = (topic, route, outcome)
        child = self._message_counters.get(key)
        if child is None:
            child = self._message_counters[key] = self.messages.labels(topic, route, outcome)
        return child

    def latency_histogram(self, route: str) -> Histogram:
        """``ingress_latency.labels(route)``, cached."""
        child = self._latency_histograms.get(route)
        if child is None:
            child = self._latency_histograms[route] = self.ingress_latency.labels(route)
        return child

    def in_flight_gauge(self, route: str) -> Gauge:
        """``in_flight.labels(route)``, cached."""
        child = self._in_flight_gauges.get(route)
        if child is None:
            child = self._in_flight_gauges[route] = self.in_flight.labels(route)
        return child

    def prepare_replies(self, routes: Iterable[str]) -> None:
        """Create the reply series of the reply routes at 0."""
        for route in routes:
            for status in REPLY_STATUSES:
                self.replies.labels(route, status)
            self.reply_wait.labels(route)

    def prepare_batches(self, routes: Iterable[str]) -> None:
        """Create the batch series of the batch routes at 0."""
        for route in routes:
            self.batch_size.labels(route)
            for outcome in INVOCATION_OUTCOMES:
                self.invocations.labels(route, outcome)

    def prepare_rate_limits(self, routes: Iterable[tuple[str, float | None]]) -> None:
        """Set every route's rate-limit gauge (0: unlimited) and create the waiting counters of
        the limited routes at 0; a route no longer listed loses its series (after a reload)."""
        routes = list(routes)
        listed = {name for name, _ in routes}
        for labels in list(self._rate_limit_routes - listed):
            for metric in (self.rate_limit, self.rate_limited, self.rate_limit_wait):
                with contextlib.suppress(KeyError):  # a counter never created for it
                    metric.remove(labels)
        self._rate_limit_routes = listed
        for name, rate in routes:
            self.rate_limit.labels(name).set(rate or 0)
            if rate:
                self.rate_limited.labels(name)
                self.rate_limit_wait.labels(name)

    def prepare(self, routes: Iterable[tuple[str, Iterable[str]]]) -> None:
        """Create the per-route series at 0, so that ``increase()`` sees the first event.

        ``routes`` are (route name, its literal topics); pattern topics appear when first seen.
        """
        for result in ("ok", "failed"):
            self.commits.labels(result)
        for action in RELEASE_ACTIONS:
            self.releases.labels(action)
        for route, topics in routes:
            self.retries.labels(route)
            self.in_flight.labels(route)
            self.trace_context_dropped.labels(route)
            self.route_paused.labels(route)
            for topic in topics:
                self.topic_paused.labels(topic)
                for outcome in ("accepted", "duplicate", "dead_lettered", "skipped"):
                    self.messages.labels(topic, route, outcome)

    def partition_gauges(self) -> tuple[Gauge, ...]:
        """The gauges with one series per owned partition (created on assignment, removed on
        revocation)."""
        return (
            self.consumer_lag,
            self.committed_lag,
            self.oldest_unfinished_age,
            self.partition_blocked,
            self.partition_paused,
        )

    def export(self) -> bytes:
        return generate_latest(self.registry)
