"""bridge.consume.oauth: the one OAUTHBEARER login of a process, its token endpoint (a real HTTP
server here) and its user provider. The real OpenID provider and broker: test_oauth_stack*.py."""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka.errors import KafkaConnectionError

from bridge.config import load_config
from bridge.consume.kafka import kafka_options
from bridge.consume.oauth import (
    ClientCredentials,
    OAuthLogin,
    ProviderSource,
    TokenRefused,
    TokenUnavailable,
    make_login,
)
from bridge.core.backoff import Backoff
from bridge.core.tokens import LOGIN_BURST, AccessToken, TokenProblem
from bridge.operate.metrics import Metrics

SECRET = "client-secret-7Hq/+&="


class Source:
    """Answers scripted one by one; then tokens that live ``lifetime`` seconds."""

    name = "the test source"
    kind = "token_endpoint"

    def __init__(self, *answers: AccessToken | TokenProblem, lifetime: float = 3600) -> None:
        self.answers = list(answers)
        self.lifetime = lifetime
        self.fetches = 0
        self.closed = False

    async def fetch(self, now: float) -> AccessToken | TokenProblem:
        self.fetches += 1
        await asyncio.sleep(0)
        if self.answers:
            return self.answers.pop(0)
        return AccessToken(f"token-{self.fetches}", now, now + self.lifetime)

    async def aclose(self) -> None:
        self.closed = True


FAST = Backoff(initial=0.01, maximum=0.02)
DOWN = TokenProblem("the test source is unreachable: ConnectionRefusedError")
REFUSED = TokenProblem("the test source answered 401 'invalid_client'", permanent=True)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_the_first_token_waits_for_a_source_that_is_down() -> None:
    source = Source(DOWN, DOWN)
    metrics = Metrics()
    login = OAuthLogin(source, metrics=metrics, sleep=no_sleep, backoff=FAST)
    assert not login.up
    assert login.reason == "none fetched yet"
    await login.start()
    try:
        assert login.up
        assert source.fetches == 3
        assert await login.token() == "token-3"
        assert metrics.kafka_token_requests.labels("token_endpoint", "failed")._value.get() == 2
        assert metrics.kafka_token_requests.labels("token_endpoint", "ok")._value.get() == 1
        up = metrics.registry.get_sample_value(
            "restate_bridge_kafka_token_up", {"source": "token_endpoint"}
        )
        assert up == 1
        assert metrics.kafka_token_expiry.labels("token_endpoint")._value.get() > time.time()
    finally:
        await login.aclose()
    assert source.closed


async def test_a_refusal_for_good_ends_the_start() -> None:
    source = Source(DOWN, REFUSED)
    login = OAuthLogin(source, sleep=no_sleep, backoff=FAST)
    with pytest.raises(TokenRefused, match="invalid_client"):
        await login.start()
    assert source.fetches == 2
    assert source.closed
    assert login.problem == REFUSED.reason
    assert login.reason == REFUSED.reason


async def test_one_token_serves_every_connection() -> None:
    source = Source()
    login = OAuthLogin(source)
    await login.start()
    try:
        tokens = await asyncio.gather(*(login.token() for _ in range(20)))
        assert set(tokens) == {"token-1"}
        assert source.fetches == 1
    finally:
        await login.aclose()


async def test_callers_without_a_token_share_one_fetch() -> None:
    source = Source()
    login = OAuthLogin(source)  # not started: the first connections ask at once
    tokens = await asyncio.gather(*(login.token() for _ in range(10)))
    assert set(tokens) == {"token-1"}
    assert source.fetches == 1


async def test_no_token_is_a_connection_error_aiokafka_retries() -> None:
    login = OAuthLogin(Source(DOWN))
    with pytest.raises(TokenUnavailable, match="unreachable") as info:
        await login.token()
    assert isinstance(info.value, KafkaConnectionError)


async def test_tokens_are_refreshed_ahead_of_expiry() -> None:
    source = Source(lifetime=0.6)  # refreshed at about 0.45-0.48 s
    login = OAuthLogin(source)
    await login.start()
    try:
        first = await login.token()
        await asyncio.sleep(0.3)
        assert await login.token() == first
        await asyncio.sleep(0.5)
        assert source.fetches >= 2
        assert await login.token() != first
        assert login.up
    finally:
        await login.aclose()


async def test_an_expired_token_is_never_handed_out() -> None:
    clock = [1000.0]
    source = Source(lifetime=10)
    login = OAuthLogin(source, clock=lambda: clock[0])
    assert await login.token() == "token-1"
    clock[0] += 10
    assert not login.up
    assert await login.token() == "token-2"


async def test_a_failing_refresh_keeps_the_current_token_until_it_expires() -> None:
    clock = [1000.0]
    source = Source(AccessToken("first", 1000.0, 1010.0), DOWN, DOWN)
    login = OAuthLogin(source, clock=lambda: clock[0])
    assert await login.token() == "first"
    source.answers = [DOWN]
    assert not await login._fetch_once()  # a refresh that fails
    assert await login.token() == "first"  # still valid
    assert not login.up
    assert "unreachable" in login.reason
    clock[0] = 1011
    source.answers = [DOWN]
    with pytest.raises(TokenUnavailable):
        await login.token()


async def test_a_brokers_refusal_brings_a_new_token_at_most_every_few_seconds() -> None:
    clock = [1000.0]
    source = Source()
    login = OAuthLogin(source, clock=lambda: clock[0])
    assert await login.token() == "token-1"
    login.broker_refused()
    assert await login.token() == "token-2"
    login.broker_refused()  # again at once: a reconnect storm, not a new cause
    assert await login.token() == "token-2"
    clock[0] += 6
    login.broker_refused()
    assert await login.token() == "token-3"


async def test_one_token_logging_in_again_and_again_brings_a_new_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [1000.0]
    source = Source()
    login = OAuthLogin(source, clock=lambda: clock[0])
    # connections made over minutes: no alarm, however many
    for _ in range(3 * LOGIN_BURST):
        assert await login.token() == "token-1"
        clock[0] += 1.0
    clock[0] += 10
    # a broker closing each connection right after the login: aiokafka reconnects at once
    with caplog.at_level(logging.WARNING, "bridge.consume.oauth"):
        for _ in range(LOGIN_BURST):
            assert await login.token() == "token-1"
            clock[0] += 0.1
    assert "keep closing right after logging in" in caplog.text
    assert await login.token() == "token-2"
    assert source.fetches == 2
    assert login.up  # one refused token may be a false alarm


async def test_brokers_that_refuse_the_new_token_too_are_reported_until_they_accept_one() -> None:
    clock = [1000.0]
    source = Source()
    metrics = Metrics()
    answers = [False, False, True]  # what the test logins find: refused twice, then accepted
    tested: list[str] = []

    async def verify(login: OAuthLogin) -> bool | None:
        tested.append(await login.token())  # a test login: with a new token
        return answers.pop(0)

    wakes: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(seconds: float) -> None:  # the watch waits until the test lets it go on
        await wakes.get()
        clock[0] += seconds

    login = OAuthLogin(source, metrics=metrics, clock=lambda: clock[0], verify=verify, sleep=sleep)

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"source": "token_endpoint"})

    assert sample("restate_bridge_kafka_token_up") == 0  # nothing fetched yet
    assert await login.token() == "token-1"
    assert sample("restate_bridge_kafka_token_up") == 1
    clock[0] += 60  # token-1 served a minute; now every connection closes after the login
    for _ in range(LOGIN_BURST):
        await login.token()
        clock[0] += 0.1
    await asyncio.sleep(0.01)  # the test login: refused
    assert tested == ["token-2"]
    assert not login.up
    assert login.reason == (
        "the brokers refuse the tokens from the test source (a test login with a new one was "
        "refused; see the broker's log)"
    )
    assert sample("restate_bridge_kafka_token_up") == 0
    assert sample("restate_bridge_kafka_token_broker_refusals_total") == 1
    wakes.put_nowait(None)  # 5 s later: another test login with a new token, refused too
    await asyncio.sleep(0.01)
    assert tested == ["token-2", "token-3"]
    assert not login.up
    wakes.put_nowait(None)  # and the next is accepted
    await asyncio.sleep(0.01)
    assert tested == ["token-2", "token-3", "token-4"]
    assert login.up
    assert sample("restate_bridge_kafka_token_up") == 1
    await login.aclose()


async def test_extensions_go_with_every_login() -> None:
    login = OAuthLogin(Source(), {"logicalCluster": "lkc-1"})
    assert login.extensions() == {"logicalCluster": "lkc-1"}


# -- the token endpoint: a real HTTP server ------------------------------------------------------


class Endpoint:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], str | None]] = []
        self.status = 200
        self.body: dict[str, Any] = {}

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((form, request.headers.get("Authorization")))
        body = self.body or {"access_token": f"jwt-{len(self.requests)}", "expires_in": 60}
        return web.json_response(body, status=self.status)

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"token_endpoint": f"{request.url.origin()}/oauth/token"})


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Endpoint, str]]:
    served = Endpoint()
    app = web.Application()
    app.router.add_post("/oauth/token", served.token)
    app.router.add_get("/.well-known/openid-configuration", served.discovery)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield served, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def oauth_config(tmp_path: Path, kafka: str) -> Path:
    (tmp_path / "secret").write_text(SECRET + "\n")
    path = tmp_path / "routes.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = "127.0.0.1:9092"\nsecurity_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "OAUTHBEARER"\nsasl_oauth_client_id = "bridge app"\n'
        f'sasl_oauth_client_secret_file = "{tmp_path / "secret"}"\n{kafka}'
        '[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
    )
    return path


async def test_client_credentials_with_basic_auth_scope_audience_and_resource(
    endpoint: tuple[Endpoint, str], tmp_path: Path
) -> None:
    served, url = endpoint
    config = load_config(
        oauth_config(
            tmp_path,
            f'sasl_oauth_token_endpoint_url = "{url}/oauth/token"\nsasl_oauth_scope = "kafka"\n'
            'sasl_oauth_audience = "kafka-api"\nsasl_oauth_resource = "urn:kafka"\n',
        ),
        {},
    )
    source = ClientCredentials(config.kafka)
    try:
        got = await source.fetch(1000.0)
    finally:
        await source.aclose()
    assert got == AccessToken("jwt-1", 1000.0, 1060.0)
    ((form, authorization),) = served.requests
    assert form == {
        "grant_type": "client_credentials",
        "scope": "kafka",
        "audience": "kafka-api",
        "resource": "urn:kafka",
    }
    # RFC 6749 2.3.1: the id and secret form-encoded, then Basic
    assert authorization is not None
    decoded = base64.b64decode(authorization.removeprefix("Basic ")).decode()
    assert decoded == "bridge%20app:client-secret-7Hq%2F%2B%26%3D"


async def test_client_secret_post_and_a_rotated_secret_file(
    endpoint: tuple[Endpoint, str], tmp_path: Path
) -> None:
    served, url = endpoint
    path = oauth_config(
        tmp_path,
        f'sasl_oauth_issuer_url = "{url}/"\nsasl_oauth_client_auth = "client_secret_post"\n',
    )
    source = ClientCredentials(load_config(path, {}).kafka)
    try:
        assert isinstance(await source.fetch(0), AccessToken)
        (tmp_path / "secret").write_text("rotated\n")
        assert isinstance(await source.fetch(0), AccessToken)
    finally:
        await source.aclose()
    assert [(f.get("client_id"), f.get("client_secret"), a) for f, a in served.requests] == [
        ("bridge app", SECRET, None),
        ("bridge app", "rotated", None),
    ]
    assert source.name == f"the token endpoint {url}/oauth/token"  # found by discovery


async def test_a_wrong_secret_is_refused_for_good_and_a_down_endpoint_is_not(
    endpoint: tuple[Endpoint, str], tmp_path: Path
) -> None:
    served, url = endpoint
    path = oauth_config(tmp_path, f'sasl_oauth_token_endpoint_url = "{url}/oauth/token"\n')
    source = ClientCredentials(load_config(path, {}).kafka)
    served.status, served.body = 401, {"error": "invalid_client", "error_description": "bad"}
    try:
        refused = await source.fetch(0)
        assert isinstance(refused, TokenProblem)
        assert refused.permanent
        assert refused.reason == (
            f"the token endpoint {url}/oauth/token answered 401 'invalid_client': 'bad'"
        )
        assert SECRET not in refused.reason
    finally:
        await source.aclose()
    gone = ClientCredentials(
        load_config(
            oauth_config(tmp_path, 'sasl_oauth_token_endpoint_url = "http://127.0.0.1:1/t"\n'), {}
        ).kafka
    )
    try:
        down = await gone.fetch(0)
    finally:
        await gone.aclose()
    assert isinstance(down, TokenProblem)
    assert not down.permanent
    assert "is unreachable" in down.reason


async def test_every_kafka_client_of_the_process_gets_the_same_login(tmp_path: Path) -> None:
    path = oauth_config(tmp_path, 'sasl_oauth_token_endpoint_url = "http://127.0.0.1:1/t"\n')
    config = load_config(path, {})
    login = make_login(config.kafka)
    assert login is not None
    options = kafka_options(config.kafka, login)
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    assert options["sasl_oauth_token_provider"] is login
    assert "sasl_plain_password" not in options
    with pytest.raises(ValueError, match="needs the process's OAuthLogin"):
        kafka_options(config.kafka)
    assert SECRET not in repr(login) + repr(config)


# -- the user's provider -------------------------------------------------------------------------


@pytest.fixture
def provider_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("my_tokens")
    sys.modules["my_tokens"] = module
    yield module
    del sys.modules["my_tokens"]


async def test_a_sync_provider_runs_in_a_thread(provider_module: types.ModuleType) -> None:
    calls: list[str] = []

    def factory() -> Any:
        calls.append("factory")

        def token() -> tuple[str, int]:
            calls.append("token")
            return "signed", 1_900_000_000_000

        return token

    provider_module.factory = factory  # type: ignore[attr-defined]
    source = ProviderSource("my_tokens:factory")
    assert await source.fetch(0) == AccessToken("signed", pytest.approx(time.time(), abs=5), 1.9e9)
    await source.fetch(0)
    assert calls == ["factory", "token", "token"]


async def test_an_async_provider(provider_module: types.ModuleType) -> None:
    async def token() -> str:
        return "async-token"

    provider_module.factory = lambda: token  # type: ignore[attr-defined]
    got = await ProviderSource("my_tokens:factory").fetch(0)
    assert isinstance(got, AccessToken)
    assert got.value == "async-token"


async def test_a_provider_that_fails_is_retried_and_one_that_returns_nonsense_is_not(
    provider_module: types.ModuleType,
) -> None:
    def failing() -> tuple[str, int]:
        raise RuntimeError("no credentials yet")

    provider_module.failing = lambda: failing  # type: ignore[attr-defined]
    provider_module.nonsense = lambda: lambda: 42  # type: ignore[attr-defined]
    provider_module.not_a_function = lambda: "x"  # type: ignore[attr-defined]
    failed = await ProviderSource("my_tokens:failing").fetch(0)
    assert failed == TokenProblem(
        "the token provider my_tokens:failing failed: RuntimeError: no credentials yet"
    )
    nonsense = await ProviderSource("my_tokens:nonsense").fetch(0)
    assert isinstance(nonsense, TokenProblem)
    assert nonsense.permanent
    assert "returned a value of type int" in nonsense.reason
    wrong = await ProviderSource("my_tokens:not_a_function").fetch(0)
    assert isinstance(wrong, TokenProblem)
    assert wrong.permanent
    assert "the factory returned a str, not a function" in wrong.reason


def test_the_routing_file_wires_the_provider(
    provider_module: types.ModuleType, tmp_path: Path
) -> None:
    provider_module.factory = lambda: lambda: ("t", None)  # type: ignore[attr-defined]
    path = tmp_path / "routes.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = "b:9098"\nsecurity_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "OAUTHBEARER"\nsasl_oauth_token_provider = "my_tokens:factory"\n'
        'sasl_oauth_extensions = ["logicalCluster=lkc-1"]\n'
        '[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
    )
    login = make_login(load_config(path, {}).kafka)
    assert login is not None
    assert isinstance(login.source, ProviderSource)
    assert login.extensions() == {"logicalCluster": "lkc-1"}
    assert orjson.dumps(login.source.name) == b'"the token provider my_tokens:factory"'


async def test_the_schema_registry_can_get_the_kafka_logins_token() -> None:
    from bridge.schemas.registry import RegistrySettings, SchemaRegistry, SchemaUnusable

    seen: list[str | None] = []

    async def schema(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"error_code": 40403, "message": "no such schema"}, status=404)

    app = web.Application()
    app.router.add_get("/schemas/ids/{id}", schema)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    login = OAuthLogin(Source())
    try:
        settings = RegistrySettings(f"http://127.0.0.1:{port}", bearer=login.token)
        async with SchemaRegistry(settings) as registry:
            with pytest.raises(SchemaUnusable):
                await registry.fetch(1)
    finally:
        await runner.cleanup()
    assert seen == ["Bearer token-1"]


def test_kafka_oauth_token_needs_an_oauthbearer_login(tmp_path: Path) -> None:
    from bridge.config import ConfigError

    path = tmp_path / "routes.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = "b:9092"\n'
        '[schema_registry]\nurl = "http://r:8081"\nkafka_oauth_token = true\n'
        '[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == [
        f'{path}:5: kafka_oauth_token needs [kafka] sasl_mechanism = "OAUTHBEARER"'
    ]
