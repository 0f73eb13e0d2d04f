"""bridge.core.tokens: OAUTHBEARER's pure part (a token endpoint's answer, a provider's answer,
when to refresh, SASL extensions)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from bridge.core.tokens import (
    MIN_DELAY,
    MIN_MARGIN,
    UNKNOWN_LIFETIME_REFRESH,
    AccessToken,
    LoginBurst,
    TokenProblem,
    extensions_problem,
    jwt_expiry,
    parse_extensions,
    read_provider_answer,
    read_token_response,
)

NOW = 1_800_000_000.0
ENDPOINT = "https://id.example/token"
SECRET_TOKEN = "tok-9Qz-secret"


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def answer(status: int, document: object) -> AccessToken | TokenProblem:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    return read_token_response(status, body, NOW, endpoint=ENDPOINT)


def test_a_token_with_expires_in() -> None:
    got = answer(200, {"access_token": SECRET_TOKEN, "token_type": "Bearer", "expires_in": 300})
    assert got == AccessToken(SECRET_TOKEN, NOW, NOW + 300)
    assert SECRET_TOKEN not in repr(got)


def test_without_expires_in_a_jwt_says_when_it_expires() -> None:
    token = jwt({"sub": "bridge", "exp": int(NOW) + 60})
    assert answer(200, {"access_token": token, "token_type": "bearer"}) == AccessToken(
        token, NOW, NOW + 60
    )


def test_without_any_expiry_the_lifetime_is_unknown() -> None:
    got = answer(200, {"access_token": "opaque"})  # token_type defaults to Bearer
    assert got == AccessToken("opaque", NOW, None)


@pytest.mark.parametrize(
    ("status", "document", "permanent", "said"),
    [
        (200, b"<html>", False, "answered 200 without JSON"),
        (200, {"token_type": "Bearer"}, False, "without an access_token"),
        (200, {"access_token": "x", "token_type": "mac"}, True, "'mac' token, not a Bearer"),
        (200, {"access_token": "a b"}, True, "not printable ASCII"),
        (401, {"error": "invalid_client"}, True, "answered 401 'invalid_client'"),
        (
            400,
            {"error": "invalid_scope", "error_description": "no such scope"},
            True,
            "answered 400 'invalid_scope': 'no such scope'",
        ),
        (400, {"error": "slow_down"}, False, "answered 400 'slow_down'"),
        (401, b"Unauthorized", True, "answered 401"),
        (403, {}, True, "answered 403"),
        (429, {"error": "too_many"}, False, "answered 429"),
        (503, b"down", False, "answered 503"),
        (408, b"", False, "answered 408"),
    ],
)
def test_answers_without_a_token(status: int, document: object, permanent: bool, said: str) -> None:
    got = answer(status, document)
    assert isinstance(got, TokenProblem)
    assert got.permanent is permanent
    assert said in got.reason
    assert ENDPOINT in got.reason


def test_the_refresh_comes_at_80_percent_less_up_to_5_percent_jitter() -> None:
    token = AccessToken("t", NOW, NOW + 1000)
    assert token.refresh_at(0.0) == NOW + 800
    assert token.refresh_at(0.999) == pytest.approx(NOW + 750, abs=0.1)


def test_short_tokens_refresh_before_they_expire_and_not_at_once() -> None:
    assert AccessToken("t", NOW, NOW + 3).refresh_at(0.5) == pytest.approx(NOW + 2.325)
    assert AccessToken("t", NOW, NOW + 1.5).refresh_at(0) == NOW + 1.5 - MIN_MARGIN
    assert AccessToken("t", NOW, NOW + 0.2).refresh_at(0) == NOW + MIN_DELAY
    assert AccessToken("t", NOW, NOW - 5).refresh_at(0) == NOW + MIN_DELAY


def test_an_unknown_lifetime_refreshes_on_a_schedule() -> None:
    assert AccessToken("t", NOW, None).refresh_at(0.3) == NOW + UNKNOWN_LIFETIME_REFRESH


def test_expiry() -> None:
    token = AccessToken("t", NOW, NOW + 10)
    assert not token.expired(NOW + 9.9)
    assert token.expired(NOW + 10)
    assert not AccessToken("t", NOW, None).expired(NOW + 1e9)


@pytest.mark.parametrize(
    "token",
    ["opaque", "a.b", "a.!!!.c", jwt({"sub": "x"}), jwt({"exp": "soon"}), jwt({"exp": True})],
)
def test_no_expiry_from_what_is_not_a_jwt_with_a_numeric_exp(token: str) -> None:
    assert jwt_expiry(token) is None


def test_a_jwts_exp() -> None:
    assert jwt_expiry(jwt({"exp": 1_900_000_000})) == 1_900_000_000.0


@pytest.mark.parametrize(
    ("returned", "expires_at"),
    [
        (("tok", 1_800_000_900_000), 1_800_000_900.0),  # epoch ms, as the MSK signer gives it
        (("tok", 1_800_000_900), 1_800_000_900.0),  # epoch seconds
        (("tok", 1_800_000_900.5), 1_800_000_900.5),
        (("tok", datetime(2027, 1, 1, tzinfo=UTC)), datetime(2027, 1, 1, tzinfo=UTC).timestamp()),
        (
            ["tok", datetime(2027, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))],
            datetime(2027, 1, 1, tzinfo=UTC).timestamp(),
        ),
        (("tok", None), None),
        ("tok", None),
    ],
)
def test_what_a_provider_may_return(returned: object, expires_at: float | None) -> None:
    assert read_provider_answer(returned, NOW, provider="p") == AccessToken("tok", NOW, expires_at)


@pytest.mark.parametrize(
    ("returned", "said"),
    [
        (None, "returned a value of type NoneType; expected (token, expiry) or a token"),
        (("tok", 1, 2), "returned a value of type tuple"),
        (("", 1), "not a non-empty string"),
        ((b"tok", 1), "not a non-empty string"),
        (("to\nk", 1), "not printable ASCII"),
        (("tok", datetime(2027, 1, 1)), "without a time zone"),
        (("tok", "tomorrow"), "expiry of type str"),
        (("tok", True), "expiry of type bool"),
        (("tok", float("nan")), "expiry of type float"),
    ],
)
def test_what_a_provider_must_not_return(returned: object, said: str) -> None:
    with pytest.raises(ValueError, match="the provider p") as info:
        read_provider_answer(returned, NOW, provider="the provider p")
    assert said in str(info.value)


def test_extensions() -> None:
    assert parse_extensions("logicalCluster=lkc-1, identityPoolId=pool-2") == {
        "logicalCluster": "lkc-1",
        "identityPoolId": "pool-2",
    }
    assert extensions_problem("a=1") is None


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("novalue", "'novalue' is not key=value"),
        ("auth=x", "must be letters only, not 'auth'"),
        ("with-dash=x", "must be letters only"),
        ("a=", "must be printable ASCII"),
        ("a=\x01", "must be printable ASCII"),
        ("a=1,a=2", "a is given twice"),
    ],
)
def test_bad_extensions(text: str, said: str) -> None:
    problem = extensions_problem(text)
    assert problem is not None
    assert said in problem


def test_a_login_burst_is_many_logins_of_one_token_within_the_window() -> None:
    burst = LoginBurst(limit=4, window=5.0)
    # spread out: never a burst
    assert not any(burst.login("a", 10.0 * i) for i in range(20))
    # four within 5 s: a burst, reported once, then counted again from zero
    assert [burst.login("a", 300 + i) for i in range(4)] == [False, False, False, True]
    assert [burst.login("a", 304 + i / 10) for i in range(4)] == [False, False, False, True]
    # the window slides: the oldest of four drops out
    assert [burst.login("a", t) for t in (400, 401, 402, 405.2, 405.9)] == [False] * 4 + [True]


def test_a_new_token_starts_the_count_again() -> None:
    burst = LoginBurst(limit=3, window=5.0)
    assert not burst.login("a", 1.0)
    assert not burst.login("a", 1.1)
    assert not burst.login("b", 1.2)
    assert not burst.login("b", 1.3)
    assert burst.login("b", 1.4)


def test_logins_at_one_moment_count_as_one() -> None:
    burst = LoginBurst(limit=3, window=5.0, gap=0.05)
    # a client connecting to 50 brokers at once
    assert not any(burst.login("a", 1.0 + i / 1000) for i in range(50))
    assert not burst.login("a", 2.0)
    assert burst.login("a", 3.0)
