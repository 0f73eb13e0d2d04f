"""Encoding of inputs, delays and paths; decoding of outputs and error bodies. Pure functions."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import orjson

from ._errors import InvalidRequest, InvocationError, NotReady, ResponseError
from ._types import NoInput

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


def segment(value: str) -> str:
    """Percent-encode one path segment: ``a/b`` must stay one key, not two segments."""
    if not isinstance(value, str):
        raise TypeError(f"keys, ids and names must be str, not {type(value).__name__}")
    return quote(value, safe="")


_RAW_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")
"""RFC 3986 ``pchar`` without ``%``: characters a path segment carries as they are."""


def idempotency_segment(key: str) -> str | None:
    """``key`` as the idempotency-key segment of ``/restate/invocation/...``, or ``None`` when
    that path cannot carry it.

    Restate (1.4 to 1.7 at least) does not percent-decode that one segment, unlike the object
    key before it: ``order%3A42`` is looked up as those nine characters, so a percent-encoded
    key is never found. A key of path characters goes as it is; any other (space, ``/``, ``%``,
    ``?``, ``#``, non-ASCII, ``.``/``..``, empty) must use the JSON lookup of 1.7 instead.
    """
    if key in (".", "..") or _RAW_SEGMENT.fullmatch(key) is None:
        return None
    return key


def check_idempotency_key(key: str) -> None:
    """Refuse, before sending, an idempotency key Restate would answer 400 to: the header value
    must be printable ASCII."""
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be str, not {type(key).__name__}")
    if not (key.isascii() and key.isprintable()):
        raise InvalidRequest(
            f"idempotency key {key[:80]!r} is not printable ASCII: Restate refuses any other "
            "header value (400 bad header idempotency-key); encode it first (e.g. hex or base64)"
        )


def check_header_value(what: str, value: str) -> None:
    """Refuse, before sending, a header value Restate would answer 400 to (or that could not be
    sent at all): it must be printable ASCII."""
    if not (value.isascii() and value.isprintable()):
        raise InvalidRequest(
            f"{what} {value[:80]!r} is not printable ASCII: Restate refuses any other header value"
        )


def encode_input(value: Any, content_type: str | None) -> tuple[bytes | None, str | None]:
    """The body and content-type for ``value``.

    ``NO_INPUT`` sends neither; ``bytes`` go as they are (``application/octet-stream`` unless the
    caller names a type); anything else is JSON, encoded by orjson (dataclasses included), a
    pydantic model through its ``model_dump(mode="json")``.
    """
    if isinstance(value, NoInput):
        return None, None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), content_type or OCTET_STREAM
    return orjson.dumps(value, default=_model_dump), content_type or JSON


def _model_dump(value: Any) -> Any:
    """What orjson cannot encode itself: a pydantic model (anything with ``model_dump``)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def format_delay(delay: timedelta) -> str | None:
    """``timedelta(seconds=2.5)`` -> ``"2500ms"`` (Restate's friendly format); zero -> None."""
    if not isinstance(delay, timedelta):
        raise TypeError(f"delay must be a datetime.timedelta, not {type(delay).__name__}")
    millis = int(delay / timedelta(milliseconds=1))
    if millis < 0:
        raise ValueError(f"delay must not be negative, got {delay}")
    return f"{millis}ms" if millis else None


def decode_output(body: bytes, content_type: str | None) -> Any:
    """JSON bodies are decoded; an empty body is ``None``; anything else stays ``bytes``."""
    if not body:
        return None
    if content_type is None or content_type.startswith(JSON):
        return orjson.loads(body)
    return body


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_timestamp(text: str) -> datetime:
    """Restate's RFC 3339 timestamps carry nanoseconds; Python keeps microseconds."""
    return datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds (``None`` when absent or unreadable): a number, or an HTTP date.

    Never raises, and never returns NaN, infinity or a negative number: ``inf``, ``nan``,
    ``1e400`` and malformed dates are ignored (``None``), a date in the past is 0. How long the
    caller actually waits is its own cap's business (the bridge's is ``retry_max``).
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
        now = now or datetime.now(when.tzinfo)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def error_from_response(
    status: int,
    body: bytes,
    *,
    source_header: str | None,
    retry_after: str | None,
    invocation_id: str | None,
) -> ResponseError:
    """One ``ResponseError`` (or subclass) from an error answer of the ingress."""
    code: int | None = None
    message = ""
    source = source_header
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        raw_code = doc.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        message = str(doc.get("message", ""))
        source = doc.get("source") or source
    else:
        message = body.decode("utf-8", "replace")[:500]
    cls: type[ResponseError] = ResponseError
    if source == "invocation":
        cls = InvocationError
    elif status == 470:
        cls = NotReady
    return cls(
        status,
        message or f"HTTP {status}",
        code=code,
        source=source,
        retry_after=parse_retry_after(retry_after),
        invocation_id=invocation_id,
    )
