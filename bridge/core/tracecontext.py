"""W3C Trace Context carried in Kafka record headers: which ``traceparent`` / ``tracestate``
values may be forwarded to the ingress. Pure: no I/O, no OpenTelemetry.

Tracing is best effort: a trace header that breaks the rules of
https://www.w3.org/TR/trace-context/ is dropped (the caller counts and logs it), never a reason
to dead-letter the record. The rules checked here:

- ``traceparent``: ``VERSION-TRACEID-PARENTID-FLAGS`` in lower-case hex
  (``^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$``); version ``ff`` is invalid, and so is a
  trace id or parent id of zeros only;
- ``tracestate``: at most :data:`MAX_TRACESTATE` characters of printable ASCII, a comma-separated
  list of at most :data:`MAX_TRACESTATE_MEMBERS` ``key=value`` members with distinct keys (empty
  members are allowed); only forwarded with a valid ``traceparent``, which it belongs to.

What goes to Restate keeps only the *sampled* bit of a version-00 ``traceparent``'s flags
(:func:`for_restate`): Restate 1.7.12 parses the header with opentelemetry-rust, which refuses
version-00 flags above ``02``, so ``03`` (sampled, with the random-trace-id flag of W3C Trace
Context Level 2 that recent OpenTelemetry SDKs set) would make it ignore the trace altogether.

Header names are matched exactly (lower case, as W3C writes them and OpenTelemetry's Kafka
instrumentations produce them); of repeated headers the last one counts, as for every header.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)

MAX_TRACESTATE = 512
"""The longest ``tracestate`` forwarded, in characters: W3C asks every hop to pass on at least
512 and allows dropping what is longer."""
MAX_TRACESTATE_MEMBERS = 32

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16
# key: simple (lcalpha ...) or multi-tenant (tenant@system); value: printable ASCII but , and =,
# not ending in a space
_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


def traceparent_problem(value: bytes) -> str | None:
    """Why ``value`` is not a usable ``traceparent``; ``None`` when it is."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return "is not ASCII"
    found = _TRACEPARENT.fullmatch(text)
    if found is None:
        return "is not VERSION-TRACEID-PARENTID-FLAGS in lower-case hex (2-32-16-2 digits)"
    if text.startswith("ff"):
        return "has the invalid version ff"
    if found.group(1) == _ZERO_TRACE_ID:
        return "has an all-zero trace id"
    if found.group(2) == _ZERO_PARENT_ID:
        return "has an all-zero parent id"
    return None


def tracestate_problem(value: bytes) -> str | None:
    """Why ``value`` is not a usable ``tracestate``; ``None`` when it is."""
    if len(value) > MAX_TRACESTATE:
        return f"is {len(value)} bytes long; at most {MAX_TRACESTATE} are forwarded"
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return "is not ASCII"
    keys: set[str] = set()
    for member in text.split(","):
        member = member.strip(" \t")
        if not member:
            continue  # W3C allows empty list members
        if _MEMBER.fullmatch(member) is None:
            return "is not a list of key=value members of printable ASCII"
        key = member.partition("=")[0]
        if key in keys:
            return f"repeats the key {key!r}"
        keys.add(key)
    if len(keys) > MAX_TRACESTATE_MEMBERS:
        return f"has {len(keys)} members; at most {MAX_TRACESTATE_MEMBERS} are allowed"
    return None


def for_restate(traceparent: str) -> str:
    """A valid ``traceparent`` as Restate joins it: of a version-00 header's flags only the
    sampled bit is kept (``03`` becomes ``01``, ``02`` becomes ``00``); other versions as they
    are."""
    if not traceparent.startswith("00-"):
        return traceparent
    flags = int(traceparent[53:55], 16)
    if flags <= 1:
        return traceparent
    return f"{traceparent[:53]}{flags & 1:02x}"


@dataclass(frozen=True, slots=True)
class TraceHeaders:
    """The trace headers of one record: what may be forwarded, and what was dropped and why."""

    headers: tuple[tuple[str, str], ...] = ()
    """``(name, value)`` to send, ``traceparent`` first."""
    dropped: tuple[str, ...] = ()
    """One reason per dropped header, naming it: ``"traceparent has an all-zero trace id"``."""


NONE = TraceHeaders()


def trace_headers(headers: Iterable[tuple[str, bytes]]) -> TraceHeaders:
    """The ``traceparent`` and ``tracestate`` of a record's headers that may be forwarded.

    A ``tracestate`` goes only with a valid ``traceparent`` (it describes that trace).
    """
    parent: bytes | None = None
    state: bytes | None = None
    for name, value in headers:
        if name == TRACEPARENT:
            parent = value
        elif name == TRACESTATE:
            state = value
    if parent is None and state is None:
        return NONE  # the common case, without allocating
    out: list[tuple[str, str]] = []
    dropped: list[str] = []
    parent_ok = False
    if parent is not None:
        problem = traceparent_problem(parent)
        if problem is None:
            out.append((TRACEPARENT, for_restate(parent.decode("ascii"))))
            parent_ok = True
        else:
            dropped.append(f"{TRACEPARENT} {problem}")
    if state is not None:
        problem = tracestate_problem(state)
        if problem is None and not parent_ok:
            problem = "comes without a valid traceparent"
        if problem is None:
            out.append((TRACESTATE, state.decode("ascii")))
        else:
            dropped.append(f"{TRACESTATE} {problem}")
    return TraceHeaders(tuple(out), tuple(dropped))
