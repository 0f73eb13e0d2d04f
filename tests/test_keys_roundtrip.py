"""Any key the router accepts reaches the handler as exactly that key (a real Restate server).

The router percent-encodes the object key into the ingress path; Restate decodes it. Hypothesis
draws keys with path and query characters, spaces, percent signs, any Unicode and lengths up to the
router's bound, and the ``Recorder`` object answers which key it ran under and what it received.
No Kafka: the record is built in memory and planned by the real router.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import parse_config
from bridge.core.record import Record
from bridge.core.routing import MAX_KEY_BYTES, Invocation, Router
from bridge.ingress import NO_INPUT, Client
from tests.helpers import recorded, until

pytestmark = pytest.mark.integration

ROUTER = Router(
    parse_config(
        '[kafka]\nbootstrap_servers = "b:9092"\n\n[[routes]]\ntopic = "keys"\ntarget = "object"\n'
        'service = "Recorder"\nhandler = "record"\nkey = "{key}"\n',
        Path("routes.toml"),
        {},
    )
)

TRICKY = "/:%?# &+=.~ü漢🙂\\\"'"
keys = st.one_of(
    st.text(min_size=1, max_size=30),
    st.text(alphabet=TRICKY, min_size=1, max_size=30),
    st.sampled_from([".", "..", "%2F", "a/b", "?x=1#f", " ", "%", "send", "restate"]),
    st.tuples(st.sampled_from(["k", "ü", "🙂", "/"]), st.integers(1, MAX_KEY_BYTES)).map(
        lambda t: t[0] * (t[1] // len(t[0].encode()))
    ),
).filter(lambda k: 0 < len(k.encode()) <= MAX_KEY_BYTES)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=keys)
async def test_any_accepted_key_round_trips_to_the_handler(client: Client, key: str) -> None:
    nonce = uuid.uuid4().hex
    value = orjson.dumps({"nonce": nonce})
    (planned,) = ROUTER.plan(Record("keys", 0, 1, 0, key.encode(), value, ()))
    assert isinstance(planned, Invocation), planned
    assert planned.key == key

    await planned.target(client).send(
        NO_INPUT if planned.body is None else planned.body,
        content_type=planned.content_type,
        delay=planned.delay,
        idempotency_key=f"{nonce}:{planned.idempotency_key}",  # fresh per example
        headers=planned.headers,
    )
    # the handler itself says which key it ran under, and that it got this record
    assert await client.object("Recorder", key, "key").request() == key
    await until(recorded(client, key), lambda seen: {"nonce": nonce} in seen, f"{nonce!r} seen")
