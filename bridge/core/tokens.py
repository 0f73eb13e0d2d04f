"""Kafka's OAUTHBEARER login, the pure part: an access token and when it expires, a token
endpoint's answer read (RFC 6749 §5), a user provider's answer read, when to refresh, and SASL
extensions (KIP-342). No I/O, no clock: times are passed in (seconds since the epoch).

A token is refreshed at 80 % of its lifetime, minus up to 5 % jitter (so replicas started
together do not all ask at once), as Kafka's own Java client does; never later than
:data:`MIN_MARGIN` seconds before it expires, never sooner than :data:`MIN_DELAY` seconds after
it was issued. A token whose lifetime is not known (no ``expires_in``, not a JWT, a provider that
gives no expiry) is refreshed every :data:`UNKNOWN_LIFETIME_REFRESH` seconds.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from .record import excerpt

REFRESH_FACTOR = 0.8
JITTER_FACTOR = 0.05
MIN_MARGIN = 1.0
"""Seconds before expiry a refresh happens at the latest."""
MIN_DELAY = 0.5
"""Seconds after issue a refresh happens at the soonest (a token endpoint's clock may be off)."""
UNKNOWN_LIFETIME_REFRESH = 600.0

PERMANENT_ERRORS = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "invalid_grant",
        "invalid_scope",
        "unsupported_grant_type",
        "invalid_request",
        "invalid_target",  # RFC 8707: a resource the server does not know
        "access_denied",
    }
)
"""Error codes of RFC 6749 §5.2 (and RFC 8707) that asking again cannot change."""

_EXTENSION_KEY = re.compile(r"[A-Za-z]+")
_EXTENSION_VALUE = re.compile(r"[\x21-\x7E \t\r\n]+")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token for the SASL login; ``value`` never appears in a ``repr``."""

    value: str = field(repr=False)
    issued_at: float
    """When it was obtained (seconds since the epoch)."""
    expires_at: float | None
    """When it expires, if known."""

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def refresh_at(self, jitter: float) -> float:
        """When to ask for the next one; ``jitter`` in ``[0, 1)`` (a random draw)."""
        if self.expires_at is None:
            return self.issued_at + UNKNOWN_LIFETIME_REFRESH
        lifetime = max(0.0, self.expires_at - self.issued_at)
        at = self.issued_at + lifetime * (REFRESH_FACTOR - JITTER_FACTOR * jitter)
        latest = self.expires_at - MIN_MARGIN
        return max(self.issued_at + MIN_DELAY, min(at, latest))


@dataclass(frozen=True, slots=True)
class TokenProblem:
    """Why no token came: ``permanent`` when asking again cannot help (wrong client secret,
    unknown client or scope); otherwise it is retried with backoff."""

    reason: str
    permanent: bool = False


def read_token_response(
    status: int, body: bytes, now: float, *, endpoint: str
) -> AccessToken | TokenProblem:
    """A token endpoint's answer to a client-credentials request (RFC 6749 §4.4.3, §5.1, §5.2).

    A 200 needs ``access_token`` (a bearer token); its lifetime is ``expires_in`` or else the
    JWT's ``exp``. An error answer names the error code and description, never a token.
    408, 429 and 5xx are retried; 400 and 401 with an error code of :data:`PERMANENT_ERRORS`
    (or no JSON at all from a 401/403) are permanent.
    """
    document = _json(body)
    if status == 200:
        if document is None:
            return TokenProblem(f"the token endpoint {endpoint} answered 200 without JSON")
        token = document.get("access_token")
        if not isinstance(token, str) or not token:
            return TokenProblem(f"the token endpoint {endpoint} answered without an access_token")
        kind = document.get("token_type", "Bearer")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            return TokenProblem(
                f"the token endpoint {endpoint} gave a {excerpt(str(kind))} token, not a Bearer "
                "token",
                permanent=True,
            )
        if not _printable(token):
            return TokenProblem(
                f"the token endpoint {endpoint} gave an access_token that is not printable ASCII",
                permanent=True,
            )
        lifetime = _number(document.get("expires_in"))
        if lifetime is not None and lifetime > 0:
            return AccessToken(token, now, now + lifetime)
        return AccessToken(token, now, jwt_expiry(token))
    code = document.get("error") if document is not None else None
    said = f"{status}"
    if isinstance(code, str) and code:
        said += f" {excerpt(code)}"
        description = document.get("error_description") if document is not None else None
        if isinstance(description, str) and description:
            said += f": {excerpt(description)}"
    reason = f"the token endpoint {endpoint} answered {said}"
    if status in (408, 425, 429) or status >= 500:
        return TokenProblem(reason)
    permanent = (isinstance(code, str) and code in PERMANENT_ERRORS) or status in (401, 403)
    return TokenProblem(reason, permanent=permanent)


def _number(value: Any) -> float | None:
    """A JSON number that is finite (not a bool, which Python counts as an int)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _printable(text: str) -> bool:
    return all(0x20 < ord(c) < 0x7F for c in text)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (seconds since the epoch), or ``None`` for a token that is not
    one. The signature is not checked: the broker does that; this only schedules a refresh."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    return _number(claims.get("exp")) if isinstance(claims, dict) else None


MILLISECONDS_FROM = 1e11
"""An expiry at or above this is in milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)."""


def read_provider_answer(answer: Any, now: float, *, provider: str) -> AccessToken:
    """What a user's token provider returned: ``(token, expiry)`` with the expiry as epoch
    milliseconds (as the AWS MSK signer and Kafka's ``lifetimeMs`` give it) or seconds, an aware
    ``datetime``, or ``None`` (unknown); or a bare token string (its JWT ``exp``, if any).
    Raises ``ValueError`` naming ``provider`` for anything else (never showing the token)."""
    if isinstance(answer, str):
        token, expiry = answer, None
    elif isinstance(answer, tuple | list) and len(answer) == 2:
        token, expiry = answer
    else:
        raise ValueError(
            f"{provider} returned a value of type {type(answer).__name__}; expected (token, "
            "expiry) or a token"
        )
    if not isinstance(token, str) or not token:
        raise ValueError(f"{provider} returned a token that is not a non-empty string")
    if not _printable(token):
        raise ValueError(f"{provider} returned a token that is not printable ASCII")
    if expiry is None:
        return AccessToken(token, now, jwt_expiry(token))
    if isinstance(expiry, datetime):
        if expiry.tzinfo is None:
            raise ValueError(f"{provider} returned an expiry without a time zone")
        return AccessToken(token, now, expiry.timestamp())
    number = _number(expiry)
    if number is not None:
        return AccessToken(token, now, number / 1000 if number >= MILLISECONDS_FROM else number)
    raise ValueError(
        f"{provider} returned an expiry of type {type(expiry).__name__}; expected epoch "
        "milliseconds or seconds, an aware datetime, or None"
    )


def extensions_problem(value: str) -> str | None:
    """Why ``sasl_oauth_extensions`` (``"key=value,key=value"``) is not valid, or ``None``."""
    try:
        parse_extensions(value)
    except ValueError as exc:
        return str(exc)
    return None


def parse_extensions(value: str) -> Mapping[str, str]:
    """``"logicalCluster=lkc-1,identityPoolId=pool-2"`` as a mapping, checked as KIP-342 says:
    keys of letters only, not ``auth``; values of printable ASCII."""
    found: dict[str, str] = {}
    for item in value.split(","):
        key, sep, text = item.strip().partition("=")
        if not sep:
            raise ValueError(f"sasl_oauth_extensions: {excerpt(item)} is not key=value")
        if not _EXTENSION_KEY.fullmatch(key) or key == "auth":
            raise ValueError(
                f"sasl_oauth_extensions: the key {excerpt(key)} must be letters only, not 'auth'"
            )
        if not _EXTENSION_VALUE.fullmatch(text):
            raise ValueError(f"sasl_oauth_extensions: the value of {key} must be printable ASCII")
        if key in found:
            raise ValueError(f"sasl_oauth_extensions: {key} is given twice")
        found[key] = text
    return found


LOGIN_BURST = 12
"""Logins with one token within :data:`LOGIN_BURST_WINDOW` seconds that make the bridge suspect
the brokers refuse it (see :class:`LoginBurst`)."""
LOGIN_BURST_WINDOW = 5.0
LOGIN_BURST_GAP = 0.05
"""Seconds within which logins count as one: a client opening connections to many brokers at once
logs in many times in a moment, not again and again."""


class LoginBurst:
    """Tells when one token logs in to Kafka too often to be accepted.

    A Kafka client logs in once per connection, and connections live long: a handful of logins
    per token, most of them at once. A broker that refuses the token closes each connection right
    after the login (aiokafka 0.14 does not see the refusal itself), and the client reconnects,
    logging in again with the same token: measured against Apache Kafka 4.4, a dozen logins
    within one to five seconds. Each burst is reported; the count starts again after it and with
    each new token. A false alarm costs one early refresh and one test login."""

    def __init__(
        self,
        limit: int = LOGIN_BURST,
        window: float = LOGIN_BURST_WINDOW,
        gap: float = LOGIN_BURST_GAP,
    ) -> None:
        self.limit = limit
        self.window = window
        self.gap = gap
        self._token: str | None = None
        self._times: list[float] = []

    def login(self, token: str, now: float) -> bool:
        """Note one login with ``token`` at ``now`` (seconds); True when it completes a burst."""
        if token != self._token:
            self._token, self._times = token, []
        if self._times and now - self._times[-1] < self.gap:
            return False  # the same moment: one more connection opened at once
        times = [t for t in self._times if now - t < self.window]
        times.append(now)
        if len(times) < self.limit:
            self._times = times
            return False
        self._times = []
        return True
