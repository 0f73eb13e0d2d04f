"""Kafka's OAUTHBEARER login: one :class:`OAuthLogin` per process gives every Kafka connection
the bridge makes (consumer, producer, admin look-ups, ``redrive``) the same cached token.

Tokens come from a :class:`TokenSource`: an OpenID Connect token endpoint with client
credentials (:class:`ClientCredentials`), or the user's own provider named by
``sasl_oauth_token_provider = "package.module:factory"`` (:class:`ProviderSource`). The login
fetches one before the first connection, refreshes it ahead of expiry (with jitter) and when a
broker refuses it, retries a token endpoint that is down with backoff (reported on ``/readyz``
and in ``restate_bridge_kafka_token_up``), and raises :class:`TokenRefused` for a refusal that
asking again cannot change (a wrong client secret): ``run`` exits with code 3.

aiokafka asks :meth:`OAuthLogin.token` each time it opens a connection. When no valid token is
at hand it gets :class:`TokenUnavailable`, a ``KafkaConnectionError``, so it treats the attempt
as a failed connection and tries again later instead of failing a consumer's task.

A broker's refusal of a token does not reach the bridge as an error: the broker sends an error
challenge, aiokafka 0.14 takes it for success, and the broker closes the connection at the next
request. At start :func:`bridge.consume.kafka.check_security` sees that close; while the bridge
runs the reconnections do: one token logging in again and again within seconds
(:class:`bridge.core.tokens.LoginBurst`) makes the login fetch a new one and make a test login
with it (:func:`bridge.consume.kafka.accepts_token`); while the brokers refuse the new tokens too,
the login is not :attr:`~OAuthLogin.up` (``/readyz``, ``restate_bridge_kafka_token_up``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaConnectionError

from ..config import KafkaConfig, read_secret_file
from ..core.backoff import Backoff
from ..core.tokens import (
    AccessToken,
    LoginBurst,
    TokenProblem,
    parse_extensions,
    read_provider_answer,
)
from ..core.tokens import read_token_response as _read_token_response
from ..extras import load_provider
from .kafka import accepts_token

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0
"""Seconds one token request (or the discovery document) may take."""
BACKOFF = Backoff(initial=1.0, maximum=60.0)
"""Retries of a token endpoint that is down (or refusing, once the bridge runs)."""
REFUSED_REFRESH_INTERVAL = 5.0
"""Seconds between two refreshes a broker's refusals ask for: a refused connection is retried
within milliseconds, and a broker that refuses every token must not make the bridge hammer the
token endpoint."""
MAX_ANSWER = 1024 * 1024
"""The most of a token endpoint's or discovery answer read, in bytes."""


class TokenUnavailable(KafkaConnectionError):  # type: ignore[misc]
    """No valid token right now (the token endpoint is down or refusing): to aiokafka, a failed
    connection it retries."""


class TokenRefused(Exception):
    """The token source refused the bridge for good (a wrong client secret, an unknown client or
    scope): retrying cannot help, the operator must fix the configuration."""


class TokenSource(Protocol):
    """Where tokens come from."""

    name: str
    """For messages: ``the token endpoint https://...`` or ``the provider pkg.mod:factory``."""
    kind: str
    """The metrics' ``source`` label: ``token_endpoint`` or ``provider``."""

    async def fetch(self, now: float) -> AccessToken | TokenProblem:
        """A new token, or why none came (never raises for a failure of the source)."""

    async def aclose(self) -> None:
        """Release connections."""


class LoginMetrics(Protocol):
    """What the login reports (:class:`bridge.operate.metrics.Metrics` implements it)."""

    def kafka_token_fetched(self, outcome: str, expires_at: float | None, source: str) -> None:
        """A fetch from ``source`` (a kind) ended: ``ok`` (with the token's expiry), ``failed``
        or ``refused``."""

    def kafka_token_refused_by_broker(self, source: str) -> None:
        """Connections kept closing right after logging in with one token from ``source``."""

    def kafka_login_state(self, source: str, up: Callable[[], bool]) -> None:
        """Report ``up()`` (:attr:`OAuthLogin.up`) whenever asked."""


def shown(url: str) -> str:
    """``url`` without user information (a URL's ``user:password@`` is a secret)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


class ClientCredentials:
    """An OpenID Connect client-credentials grant (RFC 6749 §4.4) at ``token_endpoint_url``, or
    at the ``token_endpoint`` of the issuer's discovery document. The client secret is read
    again from its file for each request, so a rotated secret needs no restart."""

    kind = "token_endpoint"

    def __init__(self, kafka: KafkaConfig) -> None:
        self._kafka = kafka
        self._endpoint = kafka.sasl_oauth_token_endpoint_url
        where = self._endpoint or f"of {kafka.sasl_oauth_issuer_url}"
        self.name = f"the token endpoint {shown(where)}"
        self._ssl: ssl.SSLContext | bool = True
        if kafka.sasl_oauth_cafile is not None:
            self._ssl = ssl.create_default_context(cafile=kafka.sasl_oauth_cafile)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _secret(self) -> str:
        kafka = self._kafka
        if kafka.sasl_oauth_client_secret_file is not None:
            with contextlib.suppress(ValueError):  # gone or emptied for a moment: the last one
                return read_secret_file(kafka.sasl_oauth_client_secret_file)
        return kafka.sasl_oauth_client_secret or ""

    async def fetch(self, now: float) -> AccessToken | TokenProblem:
        endpoint = self._endpoint or await self._discover()
        if isinstance(endpoint, TokenProblem):
            return endpoint
        kafka = self._kafka
        form = {"grant_type": "client_credentials"}
        for name, value in (
            ("scope", kafka.sasl_oauth_scope),
            ("audience", kafka.sasl_oauth_audience),
            ("resource", kafka.sasl_oauth_resource),
        ):
            if value is not None:
                form[name] = value
        client_id = kafka.sasl_oauth_client_id or ""
        headers = {"Accept": "application/json"}
        if kafka.sasl_oauth_client_auth == "client_secret_post":
            form.update(client_id=client_id, client_secret=self._secret())
        else:  # RFC 6749 §2.3.1: each form-encoded, then HTTP Basic
            pair = f"{quote(client_id, safe='')}:{quote(self._secret(), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            async with self._http().post(endpoint, data=form, headers=headers) as answer:
                body = await answer.content.read(MAX_ANSWER)
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return TokenProblem(f"{self.name} is unreachable: {_why(exc)}")
        return _read_token_response(status, body, now, endpoint=shown(endpoint))

    async def _discover(self) -> str | TokenProblem:
        issuer = (self._kafka.sasl_oauth_issuer_url or "").rstrip("/")
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            async with self._http().get(url, headers={"Accept": "application/json"}) as answer:
                status = answer.status
                document = await answer.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return TokenProblem(f"the discovery document {shown(url)} is unreachable: {_why(exc)}")
        if status != 200:
            permanent = 400 <= status < 500 and status not in (408, 425, 429)
            return TokenProblem(
                f"the discovery document {shown(url)} answered {status}", permanent=permanent
            )
        endpoint = document.get("token_endpoint") if isinstance(document, dict) else None
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            return TokenProblem(
                f"the discovery document {shown(url)} names no token_endpoint", permanent=True
            )
        self._endpoint = endpoint  # discovered once, for the life of the process
        self.name = f"the token endpoint {shown(endpoint)}"
        return endpoint


def _why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


TokenFunction = Callable[[], Any]
"""What a provider factory returns: called for each token, sync or async, it returns
``(token, expiry)`` (see :func:`bridge.core.tokens.read_provider_answer`)."""


class ProviderSource:
    """The user's provider: ``factory()`` is called once, at the first fetch, and returns the
    function called for each token. A sync function runs in a thread (it may sign with
    credentials it fetches, as the AWS MSK signer does), an async one on the loop."""

    kind = "provider"

    def __init__(self, spec: str, load: Callable[[str], Callable[[], Any]] = load_provider) -> None:
        self.name = f"the token provider {spec}"
        self._spec = spec
        self._load = load
        self._function: TokenFunction | None = None

    async def fetch(self, now: float) -> AccessToken | TokenProblem:
        try:
            if self._function is None:
                function = self._load(self._spec)()
                if not callable(function):
                    return TokenProblem(
                        f"{self.name}: the factory returned a {type(function).__name__}, "
                        "not a function",
                        permanent=True,
                    )
                self._function = function
            if inspect.iscoroutinefunction(self._function):
                answer = await self._function()
            else:
                answer = await asyncio.to_thread(self._function)
                if inspect.isawaitable(answer):
                    answer = await answer
        except ValueError as exc:
            return TokenProblem(f"{self.name}: {exc}", permanent=True)
        except Exception as exc:  # the user's code: a failure is retried, and shown
            return TokenProblem(f"{self.name} failed: {_why(exc)}")
        try:
            return read_provider_answer(answer, time.time(), provider=self.name)
        except ValueError as exc:
            return TokenProblem(str(exc), permanent=True)

    async def aclose(self) -> None:
        return None


class OAuthLogin(AbstractTokenProvider):  # type: ignore[misc]
    """The token every Kafka connection of the process logs in with (aiokafka's
    ``sasl_oauth_token_provider``). :meth:`start` gets the first one and starts refreshing;
    :meth:`aclose` stops."""

    def __init__(
        self,
        source: TokenSource,
        extensions: Mapping[str, str] | None = None,
        *,
        metrics: LoginMetrics | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff: Backoff = BACKOFF,
        verify: Callable[[OAuthLogin], Awaitable[bool | None]] | None = None,
    ) -> None:
        self.source = source
        self._verify = verify
        self._extensions = dict(extensions or {})
        self._metrics = metrics
        self._clock = clock
        self._jitter = jitter
        self._sleep = sleep
        self._backoff = backoff
        self._token: AccessToken | None = None
        self._stale = False
        self._last_forced = -REFUSED_REFRESH_INTERVAL
        self.problem: str | None = None
        """Why the last attempt got no token; ``None`` once one came."""
        self.refused: TokenProblem | None = None
        """The last permanent refusal, until a token comes again."""
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.refused_by_brokers = False
        """A test login after a burst (see :meth:`token`) was refused: the brokers refuse the
        tokens, until a test login is accepted again."""
        self._burst = LoginBurst()
        if metrics is not None:
            metrics.kafka_login_state(source.kind, lambda: self.up)

    def __repr__(self) -> str:
        return f"OAuthLogin({self.source.name}, up={self.up})"

    @property
    def up(self) -> bool:
        """A token is at hand, the last fetch succeeded, and the brokers do not keep refusing
        the tokens."""
        return self.problem is None and self._valid() is not None and not self.refused_by_brokers

    @property
    def reason(self) -> str:
        """Why no token is at hand (for ``/readyz``)."""
        if self.problem is not None:
            return self.problem
        if self.refused_by_brokers:
            return (
                f"the brokers refuse the tokens from {self.source.name} (a test login with a "
                "new one was refused; see the broker's log)"
            )
        if self._token is None:
            return "none fetched yet"
        return "the token expired or a broker refused it; fetching a new one"

    @property
    def expires_at(self) -> float | None:
        return None if self._token is None else self._token.expires_at

    def _valid(self) -> AccessToken | None:
        token = self._token
        if token is None or self._stale or token.expired(self._clock()):
            return None
        return token

    # -- aiokafka's side ------------------------------------------------------------------

    async def token(self) -> str:
        """The current token; a new one when it expired or a broker refused it."""
        current = self._valid()
        if current is None:
            await self._fetch_once()
            current = self._valid()
            if current is None:
                raise TokenUnavailable(f"no OAUTHBEARER token: {self.problem}")
        now = self._clock()
        if self._burst.login(current.value, now):
            log.warning(
                "Kafka connections keep closing right after logging in with the current "
                "OAUTHBEARER token (%d logins in %.0f s): a broker may refuse it",
                self._burst.limit,
                self._burst.window,
            )
            if self._metrics is not None:
                self._metrics.kafka_token_refused_by_broker(self.source.kind)
            self.broker_refused()
            if self._verify is not None and (self._watch is None or self._watch.done()):
                self._watch = asyncio.create_task(self._watch_brokers(), name="kafka-token-test")
        return current.value

    async def _watch_brokers(self) -> None:
        """After a burst: a test login with a new token. While the brokers refuse it, the login
        is not :attr:`up`, and tries again with a new token every few seconds."""
        assert self._verify is not None
        while True:
            try:
                accepted = await self._verify(self)
            except Exception:  # a test login must not end the watch unseen
                log.exception("a test login to Kafka failed")
                accepted = None
            if accepted is not False:
                if self.refused_by_brokers:
                    log.info("Kafka accepts the OAUTHBEARER token from %s again", self.source.name)
                self.refused_by_brokers = False
                return
            if not self.refused_by_brokers:
                log.error(
                    "Kafka refused a test login with a new OAUTHBEARER token from %s: the "
                    "brokers refuse its tokens (see the broker's log); trying again every %.0f s",
                    self.source.name,
                    REFUSED_REFRESH_INTERVAL,
                )
            self.refused_by_brokers = True
            await self._sleep(REFUSED_REFRESH_INTERVAL)
            self.broker_refused()  # the next test login brings a new token

    def extensions(self) -> dict[str, str]:
        """SASL extensions sent with every login (KIP-342), e.g. Confluent Cloud's
        ``logicalCluster`` and ``identityPoolId``."""
        return dict(self._extensions)

    def broker_refused(self) -> None:
        """A broker refused a login: the next connection asks for a new token (at most one
        forced refresh every :data:`REFUSED_REFRESH_INTERVAL` seconds)."""
        now = self._clock()
        if now - self._last_forced < REFUSED_REFRESH_INTERVAL:
            return
        self._last_forced = now
        log.info("a Kafka broker refused the OAUTHBEARER token: fetching a new one")
        self._stale = True
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Get the first token, retrying a source that is down with backoff for as long as it
        takes (:attr:`problem` says why meanwhile); then refresh in the background. Raises
        :class:`TokenRefused` when the source refuses for good."""
        attempt = 0
        try:
            while not await self._fetch_once():
                if self.refused is not None:
                    raise TokenRefused(self.refused.reason)
                delay = self._backoff.delay(attempt)
                log.warning("no Kafka token yet (%s); retrying in %.1f s", self.problem, delay)
                await self._sleep(delay)
                attempt += 1
        except BaseException:
            await self.source.aclose()
            raise
        self._task = asyncio.create_task(self._refresh_forever(), name="kafka-token-refresh")

    async def aclose(self) -> None:
        for task in (self._task, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._watch = None
        await self.source.aclose()

    async def _fetch_once(self) -> bool:
        """One fetch (one at a time: callers that wait share its result); True when it gave a
        token."""
        if self._lock.locked():  # another caller is fetching: share its answer
            async with self._lock:
                return self._valid() is not None
        async with self._lock:
            got = await self.source.fetch(self._clock())
            if isinstance(got, AccessToken):
                self._token, self._stale = got, False
                if self.problem is not None:
                    log.info("Kafka token: %s answers again", self.source.name)
                self.problem = self.refused = None
                self._report("ok", got.expires_at)
                log.debug(
                    "new Kafka token from %s, expires at %s", self.source.name, got.expires_at
                )
                return True
            self.problem = got.reason
            if got.permanent:
                self.refused = got
            self._report("refused" if got.permanent else "failed", None)
            return False

    def _report(self, outcome: str, expires_at: float | None) -> None:
        # the login's own state; restate_bridge_kafka_token_up reads :attr:`up` when scraped
        if self._metrics is not None:
            self._metrics.kafka_token_fetched(outcome, expires_at, self.source.kind)

    async def _refresh_forever(self) -> None:
        attempt = 0
        while True:
            token = self._token
            if self.problem is None and token is not None:
                delay = max(0.0, token.refresh_at(self._jitter()) - self._clock())
            else:
                delay = self._backoff.delay(attempt)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if await self._fetch_once():
                attempt = 0
            else:
                attempt += 1
                log.error(
                    "cannot refresh the Kafka token (%s); the current one %s",
                    self.problem,
                    "still serves" if self._valid() else "has expired",
                )


@contextlib.asynccontextmanager
async def kafka_login(
    kafka: KafkaConfig | None, timeout: float | None = None
) -> AsyncIterator[OAuthLogin | None]:
    """A started login for a command's Kafka clients (``redrive``, ``check``, ``route``), closed
    after; ``None`` without ``OAUTHBEARER`` (or ``kafka``). Raises :class:`TokenRefused`, or
    :class:`TokenUnavailable` when no token came within ``timeout`` seconds."""
    login = None if kafka is None else make_login(kafka)
    if login is None:
        yield None
        return
    try:
        async with asyncio.timeout(timeout):
            await login.start()
    except TimeoutError:
        raise TokenUnavailable(f"no OAUTHBEARER token in {timeout:.0f} s: {login.reason}") from None
    try:
        yield login
    finally:
        await login.aclose()


def make_login(kafka: KafkaConfig, metrics: LoginMetrics | None = None) -> OAuthLogin | None:
    """The process's login for ``kafka``; ``None`` unless ``sasl_mechanism = "OAUTHBEARER"``."""
    if kafka.sasl_mechanism != "OAUTHBEARER":
        return None
    source: TokenSource
    if kafka.sasl_oauth_token_provider is not None:
        source = ProviderSource(kafka.sasl_oauth_token_provider)
    else:
        source = ClientCredentials(kafka)
    extensions = (
        parse_extensions(kafka.sasl_oauth_extensions or "") if kafka.sasl_oauth_extensions else {}
    )
    return OAuthLogin(
        source, extensions, metrics=metrics, verify=functools.partial(accepts_token, kafka)
    )
