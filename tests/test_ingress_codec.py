"""bridge.ingress._codec and _errors: paths, bodies, delays, timestamps, error verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.ingress import NO_INPUT, IngressError, InvocationError, NotReady, ResponseError
from bridge.ingress._codec import (
    check_idempotency_key,
    decode_output,
    encode_input,
    error_from_response,
    format_delay,
    idempotency_segment,
    parse_retry_after,
    parse_timestamp,
    segment,
)
from bridge.ingress._errors import ConnectError, DecodeError, IngressTimeout, InvalidRequest


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("plain-Key_1.~", "plain-Key_1.~"),
        ("a/b", "a%2Fb"),
        ("with space", "with%20space"),
        ("ü", "%C3%BC"),
        ("100%", "100%25"),
        ("what?", "what%3F"),
        ("#tag", "%23tag"),
        ("a+b&c=d", "a%2Bb%26c%3Dd"),
        ("", ""),
    ],
)
def test_segment(value: str, encoded: str) -> None:
    assert segment(value) == encoded


@pytest.mark.parametrize("value", [b"bytes", 42, None])
def test_segment_refuses_non_strings(value: Any) -> None:
    with pytest.raises(TypeError, match="keys, ids and names must be str, not "):
        segment(value)


@pytest.mark.parametrize(
    ("value", "content_type", "expected"),
    [
        (NO_INPUT, None, (None, None)),
        (NO_INPUT, "text/plain", (None, None)),
        (None, None, (b"null", "application/json")),
        ({"a": [1, "x"]}, None, (b'{"a":[1,"x"]}', "application/json")),
        ("text", None, (b'"text"', "application/json")),
        (5, "application/vnd+json", (b"5", "application/vnd+json")),
        (b"\x00raw", None, (b"\x00raw", "application/octet-stream")),
        (b'{"a":1}', "application/json", (b'{"a":1}', "application/json")),
        (bytearray(b"ba"), None, (b"ba", "application/octet-stream")),
        (memoryview(b"mv"), "text/plain", (b"mv", "text/plain")),
    ],
)
def test_encode_input(value: Any, content_type: str | None, expected: tuple[Any, Any]) -> None:
    body, ctype = encode_input(value, content_type)
    assert (body, ctype) == expected
    assert body is None or type(body) is bytes


@pytest.mark.parametrize(
    ("delay", "text"),
    [
        (timedelta(seconds=2.5), "2500ms"),
        (timedelta(milliseconds=1001), "1001ms"),
        (timedelta(seconds=4), "4000ms"),
        (timedelta(hours=1), "3600000ms"),
        (timedelta(0), None),
    ],
)
def test_format_delay(delay: timedelta, text: str | None) -> None:
    assert format_delay(delay) == text


def test_format_delay_refuses_negative() -> None:
    with pytest.raises(ValueError, match="delay must not be negative"):
        format_delay(timedelta(seconds=-1))


@pytest.mark.parametrize("delay", [2.5, 4, "4s", None])
def test_format_delay_refuses_non_timedelta(delay: Any) -> None:
    with pytest.raises(TypeError, match=r"^delay must be a datetime\.timedelta, not "):
        format_delay(delay)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"", "application/json", None),
        (b"", "text/plain", None),
        (b'{"a":1}', "application/json", {"a": 1}),
        (b"[1,2]", "application/json; charset=utf-8", [1, 2]),
        (b'"x"', None, "x"),
        (b"raw", "text/plain", b"raw"),
        (b"\x00\x01", "application/octet-stream", b"\x00\x01"),
    ],
)
def test_decode_output(body: bytes, content_type: str | None, expected: Any) -> None:
    assert decode_output(body, content_type) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "2024-05-01T12:34:56.123456789Z",
            datetime(2024, 5, 1, 12, 34, 56, 123456, tzinfo=UTC),
        ),
        ("2024-05-01T12:34:56Z", datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)),
        ("2024-05-01T12:34:56.5Z", datetime(2024, 5, 1, 12, 34, 56, 500000, tzinfo=UTC)),
        (
            "2024-05-01T12:34:56.000001999+02:00",
            datetime(2024, 5, 1, 12, 34, 56, 1, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("not a date", None),
        ("1e12", 1e12),  # huge but finite: the caller caps it (the bridge at retry_max)
        ("inf", None),
        ("-inf", None),
        ("Infinity", None),
        ("nan", None),
        ("1e400", None),  # overflows to infinity
        ("Mon, 32 Foo 99999 25:61:61 GMT", None),
        ("Fri, 31 Dec 9999 23:59:59 +9999", None),  # offset out of range
        ("Sat, 01 Jan 10000 00:00:00 GMT", None),  # year out of range
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0  # in the past


def test_parse_retry_after_year_9999_is_finite_seconds() -> None:
    seconds = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT")
    assert seconds is not None
    assert 2e11 < seconds < 3e11


def test_parse_retry_after_http_date_without_now_is_in_the_future() -> None:
    seconds = parse_retry_after("Fri, 31 Dec 2100 23:59:59 GMT")
    assert seconds is not None
    assert seconds > 365 * 24 * 3600


def error(
    status: int,
    body: bytes = b"",
    *,
    source: str | None = None,
    retry_after: str | None = None,
    invocation_id: str | None = None,
) -> ResponseError:
    return error_from_response(
        status, body, source_header=source, retry_after=retry_after, invocation_id=invocation_id
    )


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (404, False),
        (409, False),
        (422, False),
        (408, True),
        (425, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
    ],
)
def test_ingress_errors_and_retryable_verdicts(status: int, retryable: bool) -> None:
    body = b'{"code": %d, "message": "boom"}' % status
    exc = error(status, body, source="ingress")
    assert type(exc) is ResponseError
    assert isinstance(exc, IngressError)
    assert exc.status == status
    assert exc.code == status
    assert exc.message == "boom"
    assert exc.source == "ingress"
    assert exc.retryable is retryable
    assert str(exc) == f"{status} (ingress): boom"


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_invocation_source_is_never_retryable(status: int) -> None:
    exc = error(status, b'{"code": 503, "message": "handler failed"}', source="invocation")
    assert type(exc) is InvocationError
    assert exc.retryable is False
    assert exc.code == 503
    assert exc.message == "handler failed"


def test_source_from_the_body_beats_the_header() -> None:
    exc = error(500, b'{"message": "m", "source": "invocation"}', source="ingress")
    assert type(exc) is InvocationError
    assert exc.source == "invocation"
    assert exc.retryable is False


def test_470_is_not_ready() -> None:
    exc = error(470, b'{"message": "not ready"}', invocation_id="inv_1")
    assert type(exc) is NotReady
    assert isinstance(exc, ResponseError)
    assert exc.retryable is False
    assert exc.invocation_id == "inv_1"
    assert exc.source is None
    assert str(exc) == "470: not ready"


def test_non_json_body_becomes_the_message() -> None:
    exc = error(502, b"<html>Bad Gateway</html>")
    assert exc.message == "<html>Bad Gateway</html>"
    assert exc.code is None
    assert exc.retryable is True
    long = error(500, b"x" * 2000)
    assert long.message == "x" * 500


@pytest.mark.parametrize("body", [b"", b"{}", b'{"code": "nan"}'])
def test_empty_message_falls_back_to_the_status(body: bytes) -> None:
    exc = error(503, body)
    assert exc.message == "HTTP 503"
    assert exc.code is None


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), (None, None), ("soon", None)])
def test_retry_after_is_propagated(header: str | None, seconds: float | None) -> None:
    assert error(429, retry_after=header).retry_after == seconds
    assert error(503, retry_after=header).retry_after == seconds


def test_transport_errors_are_retryable() -> None:
    assert ConnectError("refused").retryable is True
    assert IngressTimeout("slow").retryable is True
    assert IngressError("x").retryable is False


@pytest.mark.parametrize(
    "key",
    ["plain", "orders-0-42:route", "a:b", "x@y", "a+b", "k=v;w", "a,b", "(x)", "it's", "$&!*~._-"],
)
def test_idempotency_keys_of_path_characters_go_raw_in_the_path(key: str) -> None:
    assert idempotency_segment(key) == key


@pytest.mark.parametrize(
    "key", ["a b", "a/b", "50%", "50%25", "q?x", "h#x", 'u"x', "ünï", "", ".", "..", "a\\b", "<x>"]
)
def test_other_idempotency_keys_need_the_json_lookup(key: str) -> None:
    assert idempotency_segment(key) is None


@pytest.mark.parametrize("key", ["ünï", "tab\there", "nl\n", "nul\x00", "del\x7f"])
def test_idempotency_keys_restate_would_refuse_are_invalid_requests(key: str) -> None:
    with pytest.raises(InvalidRequest, match="not printable ASCII"):
        check_idempotency_key(key)


def test_printable_ascii_idempotency_keys_pass() -> None:
    check_idempotency_key("orders-0-42:route with/odd %chars?#")
    check_idempotency_key("")


def test_timeout_error_and_decode_error_in_the_tree() -> None:
    timeout = IngressTimeout("x")
    assert isinstance(timeout, TimeoutError)
    assert isinstance(timeout, IngressError)
    assert str(timeout) == "x"
    assert timeout.message == "x"
    assert timeout.retryable
    decode = DecodeError("bad", body=b"b")
    assert isinstance(decode, IngressError)
    assert not decode.retryable
    assert decode.reason == "decode"


class Model:
    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def model_dump(self, *, mode: str) -> dict[str, Any]:
        assert mode == "json"
        return self.fields


def test_inputs_with_model_dump_are_sent_as_their_json() -> None:
    assert encode_input(Model(a=1, b=[Model(c="x")]), None) == (
        b'{"a":1,"b":[{"c":"x"}]}',
        "application/json",
    )
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        encode_input(object(), None)
