"""The per-record caches (metric children, target paths) answer what the uncached calls did."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from bridge.core.record import as_text
from bridge.ingress import Client
from bridge.operate.metrics import Metrics


def test_metric_children_are_the_labelled_series() -> None:
    metrics = Metrics()
    counter = metrics.message_counter("orders", "r1", "accepted")
    assert counter is metrics.message_counter("orders", "r1", "accepted")
    assert counter is metrics.messages.labels("orders", "r1", "accepted")
    counter.inc()
    metrics.latency_histogram("r1").observe(0.002)
    metrics.in_flight_gauge("r1").inc()
    text = metrics.export().decode()
    assert 'restate_bridge_messages_total{outcome="accepted",route="r1",topic="orders"} 1.0' in text
    assert 'restate_bridge_ingress_latency_seconds_count{route="r1"} 1.0' in text
    assert 'restate_bridge_in_flight{route="r1"} 1.0' in text


@pytest.mark.parametrize("key", ["acct/7", "with space", "ünï", "", "%41", "a" * 100])
def test_cached_paths_are_percent_encoded_per_segment(key: str) -> None:
    client = Client("http://ingress:8080")
    first = client.object("Ledger", key, "append")
    again = client.object("Ledger", key, "append")
    assert first == again
    assert first.path == f"/Ledger/{quote(key, safe='')}/append"
    assert client.workflow("Signup", key).path == f"/Signup/{quote(key, safe='')}/run"
    assert client.service("Greeter", "greet").path == "/Greeter/greet"


def test_a_key_that_is_not_text_is_still_refused() -> None:
    client = Client()
    with pytest.raises(TypeError, match="must be str"):
        client.object("Ledger", 7, "append")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be str"):
        client.object("Ledger", ["k"], "append")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 7, -3, 2**63, 10**40])
def test_integers_as_template_text_are_their_json(value: int) -> None:
    assert as_text(value, "offset") == str(value)
    assert as_text(True, "flag") == "true"
