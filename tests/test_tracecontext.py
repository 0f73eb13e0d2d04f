"""bridge.core.tracecontext: which W3C trace headers of a record may be forwarded, as tables."""

from __future__ import annotations

import pytest

from bridge.core.tracecontext import (
    MAX_TRACESTATE,
    TraceHeaders,
    for_restate,
    trace_headers,
    traceparent_problem,
    tracestate_problem,
)

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (TP, None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", None),  # not sampled: fine
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),  # a later version
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "has the invalid version ff"),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", "has an all-zero trace id"),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", "has an all-zero parent id"),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "is not VERSION"),
        ("00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01", "is not VERSION"),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-", "is not VERSION"),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nx: y", "is not VERSION"),
        (" 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "is not VERSION"),
        ("00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01", "is not VERSION"),
        ("", "is not VERSION"),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g", "is not VERSION"),
        ("00-0af7651916cd43dd8448eb211c8031ç-b7ad6b7169203331-01", "is not ASCII"),
    ],
)
def test_traceparent_rules(value: str, problem: str | None) -> None:
    found = traceparent_problem(value.encode())
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


def test_traceparent_that_is_not_utf8() -> None:
    assert traceparent_problem(b"\xff\xfe") == "is not ASCII"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("congo=t61rcWkgMzE", None),
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", None),
        ("rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE", None),  # optional white space
        ("rojo=1,,congo=2", None),  # empty members are allowed
        ("", None),
        ("tenant1@vendor=x", None),  # a multi-tenant key
        ("a-b_c*d/e=some value", None),  # a space inside a value
        ("Congo=1", "is not a list"),  # keys are lower case
        ("congo", "is not a list"),
        ("congo=", "is not a list"),  # a value has at least one character
        ("congo=a=b", "is not a list"),
        ("congo=ends with space ", None),  # trailing white space is list syntax, not the value
        ("congo=é", "is not ASCII"),
        ("congo=a\x01b", "is not a list"),
        ("congo=1,congo=2", "repeats the key 'congo'"),
        (",".join(f"k{i}=v" for i in range(33)), "has 33 members"),
        (",".join(f"k{i}=v" for i in range(32)), None),
        ("a=" + "v" * 254 + ",b=" + "v" * (MAX_TRACESTATE - 259), None),
        ("a=" + "v" * 254 + ",b=" + "v" * (MAX_TRACESTATE - 258), f"is {MAX_TRACESTATE + 1} bytes"),
        ("k=" + "v" * 257, "is not a list"),  # a value has at most 256 characters
    ],
)
def test_tracestate_rules(value: str, problem: str | None) -> None:
    found = tracestate_problem(value.encode())
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


BAD_TP = "00-00000000000000000000000000000000-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), TraceHeaders()),
        ((("x-other", b"1"),), TraceHeaders()),
        ((("traceparent", TP.encode()),), TraceHeaders((("traceparent", TP),))),
        (
            (("tracestate", b"congo=1"), ("traceparent", TP.encode())),
            TraceHeaders((("traceparent", TP), ("tracestate", "congo=1"))),
        ),
        (  # the last of repeated headers counts
            (("traceparent", b"junk"), ("traceparent", TP.encode())),
            TraceHeaders((("traceparent", TP),)),
        ),
        (
            (("traceparent", BAD_TP.encode()), ("tracestate", b"congo=1")),
            TraceHeaders(
                (),
                (
                    "traceparent has an all-zero trace id",
                    "tracestate comes without a valid traceparent",
                ),
            ),
        ),
        (
            (("tracestate", b"congo=1"),),
            TraceHeaders((), ("tracestate comes without a valid traceparent",)),
        ),
        (
            (("traceparent", TP.encode()), ("tracestate", b"Bad")),
            TraceHeaders(
                (("traceparent", TP),),
                ("tracestate is not a list of key=value members of printable ASCII",),
            ),
        ),
        (  # names are matched exactly, as every header is
            (("Traceparent", TP.encode()),),
            TraceHeaders(),
        ),
    ],
)
def test_trace_headers(headers: tuple[tuple[str, bytes], ...], expected: TraceHeaders) -> None:
    assert trace_headers(headers) == expected


@pytest.mark.parametrize(
    ("flags", "sent"),
    [("00", "00"), ("01", "01"), ("02", "00"), ("03", "01"), ("ff", "01"), ("fe", "00")],
)
def test_restate_gets_the_sampled_bit_only(flags: str, sent: str) -> None:
    stem = TP[:-2]
    assert for_restate(stem + flags) == stem + sent
    assert trace_headers([("traceparent", (stem + flags).encode())]).headers == (
        ("traceparent", stem + sent),
    )


def test_later_versions_go_as_they_are() -> None:
    later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"
    assert for_restate(later) == later
