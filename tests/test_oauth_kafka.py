"""The bridge logging in to Apache Kafka with OAUTHBEARER tokens from a real OpenID provider.

The provider is npm's ``oidc-provider`` (client credentials, JWT access tokens for the resource
"kafka"); the broker validates the JWTs with Kafka's ``OAuthBearerValidatorCallbackHandler``
against the provider's JWKS, expected issuer and audience (``tests/stack/oidc.py``,
``tests/stack/oauth_kafka.py``). Test records are produced and offsets read through the broker's
PLAINTEXT listener; the bridge's routing file names only an OAUTHBEARER listener, and the broker
answers Metadata with that listener's endpoints, so every consumer, commit and dead-letter
connection of the bridge logs in with a token.

Apache Kafka only: tansu 0.6.0 has no SASL (docs/security.md).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.ingress import Client
from tests.helpers import recorded, recorder, unique, until
from tests.stack import apache_kafka, overstating_provider
from tests.stack.apache_kafka import ApacheKafkaBroker
from tests.stack.bridge_process import BridgeProcess, routes_toml
from tests.stack.kafka_io import Message, create_topics, produce, read_topic
from tests.stack.ledger import committed_offsets
from tests.stack.logs import keep_log
from tests.stack.oauth_kafka import oauth_broker
from tests.stack.oidc import OidcProvider
from tests.stack.restate import RestateServer
from tests.stack.tls import Certificates
from tests.test_kafka_security import committed

pytestmark = pytest.mark.integration

JWT = re.compile(r"eyJ[\w-]{10,}\.[\w-]{10,}")
"""What a JWT access token looks like (its header and payload): never in a log or an answer."""


@dataclass(frozen=True)
class OAuthKafka:
    oidc: OidcProvider
    broker: ApacheKafkaBroker
    certs: Certificates

    @property
    def admin(self) -> str:
        """The PLAINTEXT listener: setup and checks, never the bridge."""
        return self.broker.bootstrap_servers


def _kafka_available() -> None:
    reason = apache_kafka.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Apache Kafka is mandatory in CI: {reason}", pytrace=False)
        pytest.skip(reason)


def _stack(
    request: pytest.FixtureRequest, workdir: Path, *, token_ttl: int, reauth_ms: int | None
) -> Iterator[OAuthKafka]:
    _kafka_available()
    oidc = OidcProvider(workdir / "oidc", token_ttl=token_ttl)
    oidc.start()
    keep_log(request.config, oidc.log_path)
    try:
        broker, certs = oauth_broker(workdir / "kafka", oidc, reauth_ms=reauth_ms)
        keep_log(request.config, broker.workdir / "kafka.log")
        broker.start()
        try:
            yield OAuthKafka(oidc, broker, certs)
        finally:
            broker.stop()
    finally:
        oidc.stop()


@pytest.fixture(scope="module")
def oauth_kafka(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[OAuthKafka]:
    """Tokens that live an hour."""
    yield from _stack(request, stack_dir / "oauth", token_ttl=3600, reauth_ms=None)


@pytest.fixture(scope="module")
def short_tokens(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[OAuthKafka]:
    """Tokens that live 5 s, and a broker that ends each session after 3 s."""
    yield from _stack(request, stack_dir / "oauth-short", token_ttl=5, reauth_ms=3000)


def oauth_lines(stack: OAuthKafka, listener: str, secret_file: Path, secret: str) -> str:
    secret_file.write_text(secret + "\n")
    tls = f'ssl_cafile = "{stack.certs.ca}"\n' if listener == "OAUTH_SSL" else ""
    protocol = "SASL_SSL" if listener == "OAUTH_SSL" else "SASL_PLAINTEXT"
    return (
        f'security_protocol = "{protocol}"\n{tls}sasl_mechanism = "OAUTHBEARER"\n'
        f'sasl_oauth_issuer_url = "{stack.oidc.issuer}"\n'
        f'sasl_oauth_client_id = "{stack.oidc.client_id}"\n'
        f'sasl_oauth_client_secret_file = "{secret_file}"\n'
    )


def bridge_process(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    stack: OAuthKafka,
    restate: RestateServer,
    *,
    topic: str,
    group: str,
    listener: str = "OAUTH_SSL",
    secret: str | None = None,
    dlq: str | None = None,
    kafka_lines: str | None = None,
    env: dict[str, str] | None = None,
) -> BridgeProcess:
    proc = BridgeProcess(tmp_path, "bridge", env={"BRIDGE_LOG_LEVEL": "DEBUG", **(env or {})})
    keep_log(request.node, proc.process.log_path)
    lines = kafka_lines or oauth_lines(
        stack, listener, tmp_path / "client-secret", secret or stack.oidc.client_secret
    )
    proc.write_routes(
        routes_toml(
            bootstrap=stack.broker.address(listener),
            ingress_url=restate.ingress_url,
            group_id=group,
            metrics_port=proc.metrics_port,
            routes=recorder(topic, body="{value.n}"),
            dead_letter_topic=dlq,
            kafka_extra=lines,
        )
    )
    request.addfinalizer(proc.kill)
    return proc


def assert_nothing_leaked(stack: OAuthKafka, *texts: str) -> None:
    for text in texts:
        assert stack.oidc.client_secret not in text
        assert JWT.search(text) is None, JWT.search(text)


@pytest.mark.parametrize("listener", ["OAUTH_SSL", "OAUTH"])
async def test_the_bridge_delivers_commits_and_dead_letters_with_oauth_tokens(
    listener: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    oauth_kafka: OAuthKafka,
    restate: RestateServer,
    client: Client,
) -> None:
    topic, dlq, group, key = unique("oauth"), unique("dlq"), unique("g"), unique("k")
    await create_topics(oauth_kafka.admin, [topic, dlq])
    values = [b'{"n": 1}', b"not json", b'{"n": 2}', b'{"n": 3}']
    await produce(oauth_kafka.admin, topic, [Message(key.encode(), v) for v in values])
    issued = oauth_kafka.oidc.tokens_issued()

    bridge = bridge_process(
        request,
        tmp_path,
        oauth_kafka,
        restate,
        topic=topic,
        group=group,
        listener=listener,
        dlq=dlq,
    )
    bridge.start()  # ready: in the group, logged in with a token

    await until(recorded(client, key), lambda seen: seen == [1, 2, 3], "delivered in order")
    await until(
        lambda: committed(oauth_kafka.admin, group, topic),
        lambda offset: offset == len(values),
        "the group committed at the partition end",
    )
    [dead] = await read_topic(oauth_kafka.admin, dlq, expect=1)
    assert (dead.key, dead.value) == (key.encode(), b"not json")
    assert bridge.value("restate_bridge_kafka_token_up", source="token_endpoint") == 1
    assert (
        bridge.value(
            "restate_bridge_kafka_token_requests_total", source="token_endpoint", outcome="ok"
        )
        == 1
    )
    # one token for the consumer, the coordinator, the fetches and the dead-letter producer
    assert oauth_kafka.oidc.tokens_issued() - issued == 1

    served = [bridge.text(path) for path in ("/metrics", "/status.json", "/", "/readyz")]
    assert bridge.terminate() == 0
    log = bridge.log()
    assert "DEBUG" in log
    assert " ERROR " not in log, log
    letter = repr(dead.value) + repr(dead.headers)
    assert_nothing_leaked(oauth_kafka, log, letter, *served)


def test_a_wrong_client_secret_stops_the_bridge_with_the_cause_and_exit_code_3(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    oauth_kafka: OAuthKafka,
    restate: RestateServer,
) -> None:
    wrong = "not-the-client-secret"
    bridge = bridge_process(
        request, tmp_path, oauth_kafka, restate, topic=unique("t"), group=unique("g"), secret=wrong
    )
    error, log = bridge.refused(timeout=30)
    server = oauth_kafka.broker.address("OAUTH_SSL")
    assert f"ERROR bridge: Kafka at {server}: OAUTHBEARER: the token endpoint " in error
    assert "answered 401 'invalid_client'" in error, error
    assert wrong not in log


def test_a_token_the_broker_refuses_stops_the_bridge_with_the_cause_and_exit_code_3(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    oauth_kafka: OAuthKafka,
    restate: RestateServer,
) -> None:
    # a provider the broker does not trust: another issuer, other signing keys
    stranger = OidcProvider(tmp_path / "stranger", clients={"restate-bridge": "stranger-secret"})
    stranger.start()
    request.addfinalizer(stranger.stop)
    untrusted = OAuthKafka(stranger, oauth_kafka.broker, oauth_kafka.certs)
    lines = oauth_lines(
        untrusted,
        "OAUTH_SSL",
        tmp_path / "client-secret",
        stranger.client_secret,
    )
    bridge = bridge_process(
        request,
        tmp_path,
        oauth_kafka,
        restate,
        topic=unique("t"),
        group=unique("g"),
        kafka_lines=lines,
    )
    error, log = bridge.refused(timeout=60)
    server = oauth_kafka.broker.address("OAUTH_SSL")
    assert error.endswith(
        f"ERROR bridge: Kafka at {server}: the broker refused the OAUTHBEARER token from the "
        f"token endpoint {stranger.token_endpoint} (check the broker's expected issuer and "
        "audience, and that it can read the provider's keys)"
    ), error
    assert stranger.tokens_issued() == 2, "refused twice: the first token, then a new one"
    assert_nothing_leaked(untrusted, log)


async def test_a_token_the_broker_refuses_while_the_bridge_runs_is_replaced(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    short_tokens: OAuthKafka,
    restate: RestateServer,
    client: Client,
) -> None:
    """A user provider whose tokens it says live an hour: the broker refuses each after 5 s, and
    only the bridge's noticing of the refusals brings the next one. Then the provider hands out
    tokens of a provider the broker does not trust: the block is reported until it is fixed."""
    topic, group, key = unique("refused"), unique("g"), unique("k")
    await create_topics(short_tokens.admin, [topic])
    oidc = short_tokens.oidc
    stranger = OidcProvider(tmp_path / "stranger", clients={"restate-bridge": "stranger-secret"})
    stranger.start()
    request.addfinalizer(stranger.stop)
    settings = tmp_path / "provider.json"
    overstating_provider.use(settings, oidc.token_endpoint, oidc.client_id, oidc.client_secret)
    lines = (
        f'security_protocol = "SASL_SSL"\nssl_cafile = "{short_tokens.certs.ca}"\n'
        'sasl_mechanism = "OAUTHBEARER"\n'
        'sasl_oauth_token_provider = "tests.stack.overstating_provider:factory"\n'
    )
    issued = oidc.tokens_issued()
    bridge = bridge_process(
        request,
        tmp_path,
        short_tokens,
        restate,
        topic=topic,
        group=group,
        kafka_lines=lines,
        env={"TEST_OIDC_PROVIDER_FILE": str(settings)},
    )
    bridge.start()
    sent = []

    async def send(n: int) -> None:
        sent.append(n)
        await produce(short_tokens.admin, topic, [Message(key.encode(), f'{{"n": {n}}}'.encode())])

    for n in range(1, 16):  # 15 s of records: each token is refused after 5 s
        await send(n)
        await asyncio.sleep(1)
    await until(recorded(client, key), lambda seen: seen == sent, "every record once", timeout=60)
    refreshed = oidc.tokens_issued() - issued
    assert refreshed >= 3, f"{refreshed} tokens in 15 s of tokens refused after 5 s"
    assert "keep closing right after logging in" in bridge.log()
    assert bridge.value("restate_bridge_kafka_token_broker_refusals_total") >= 2
    assert bridge.ready()

    # every new token refused: not ready, and why; the token metric says so too
    overstating_provider.use(settings, stranger.token_endpoint, "restate-bridge", "stranger-secret")
    await until(bridge.readyz, lambda answer: "brokers refuse the tokens" in str(answer), "readyz")
    assert bridge.value("restate_bridge_kafka_token_up", source="provider") == 0
    await send(16)
    overstating_provider.use(settings, oidc.token_endpoint, oidc.client_id, oidc.client_secret)
    await until(bridge.ready, bool, "ready again without a restart", timeout=60)
    await send(17)
    await until(recorded(client, key), lambda seen: seen == sent, "nothing lost", timeout=60)
    assert bridge.terminate() == 0
    log = bridge.log()
    assert "Traceback" not in log
    assert_nothing_leaked(short_tokens, log)


async def test_short_lived_tokens_and_ended_sessions_lose_and_double_nothing(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    short_tokens: OAuthKafka,
    restate: RestateServer,
    client: Client,
) -> None:
    topic, group = unique("short"), unique("g")
    await create_topics(short_tokens.admin, [topic], partitions=2)
    keys = [unique("k") for _ in range(4)]
    issued = short_tokens.oidc.tokens_issued()
    bridge = bridge_process(request, tmp_path, short_tokens, restate, topic=topic, group=group)
    bridge.start()
    sent: dict[str, list[int]] = {k: [] for k in keys}
    n = 0
    for _ in range(20):  # 20 s of records: four token lifetimes, several ended sessions
        batch = []
        for key in keys:
            n += 1
            sent[key].append(n)
            batch.append(Message(key.encode(), f'{{"n": {n}}}'.encode()))
        await produce(short_tokens.admin, topic, batch)
        await asyncio.sleep(1)
    for key in keys:
        await until(
            recorded(client, key),
            lambda seen, key=key: seen == sent[key],
            f"{key}: every record once, in order",
            timeout=60,
        )
    # both partitions (the keys may all hash to one): every record committed, over ended sessions
    await until(
        lambda: committed_offsets(short_tokens.admin, group, topic),
        lambda offsets: sum(offsets.values()) == n,
        f"the group committed all {n} records",
    )
    refreshed = short_tokens.oidc.tokens_issued() - issued
    assert refreshed >= 4, f"{refreshed} tokens in 20 s of 5 s tokens"
    assert bridge.ready()
    assert bridge.terminate() == 0
    log = bridge.log()
    assert "Traceback" not in log
    assert_nothing_leaked(short_tokens, log)


async def test_a_provider_that_is_down_is_waited_for_and_reported_without_a_restart(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    short_tokens: OAuthKafka,
    restate: RestateServer,
    client: Client,
) -> None:
    topic, group, key = unique("down"), unique("g"), unique("k")
    await create_topics(short_tokens.admin, [topic])
    oidc = short_tokens.oidc
    bridge = bridge_process(request, tmp_path, short_tokens, restate, topic=topic, group=group)
    oidc.stop()
    try:
        bridge.process.start()  # no token to start with: it waits, and says why
        await until(bridge.readyz, lambda answer: "no Kafka token" in str(answer), "readyz")
        status, reason = bridge.readyz()
        assert status == 503
        assert "unreachable" in str(reason)
        assert bridge.value("restate_bridge_kafka_token_up", source="token_endpoint") == 0
    finally:
        oidc.start()
    await until(bridge.ready, bool, "ready once the provider answers", timeout=90)
    await produce(short_tokens.admin, topic, [Message(key.encode(), b'{"n": 1}')])
    await until(recorded(client, key), lambda seen: seen == [1], "delivered")

    oidc.stop()  # while it runs: the token expires, new sessions cannot log in
    try:
        await until(bridge.readyz, lambda answer: "no Kafka token" in str(answer), "readyz")
        await produce(short_tokens.admin, topic, [Message(key.encode(), b'{"n": 2}')])
    finally:
        oidc.start()
    await until(bridge.ready, bool, "ready again", timeout=90)
    await produce(short_tokens.admin, topic, [Message(key.encode(), b'{"n": 3}')])
    await until(recorded(client, key), lambda seen: seen == [1, 2, 3], "nothing lost")
    assert bridge.terminate() == 0
