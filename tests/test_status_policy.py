"""bridge.core.status_policy: reading ``retry_on`` / ``dead_letter_on`` / ``block_on`` entries, and
which list a status falls in. Pure: tables."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.status_policy import StatusPolicy, StatusRange, overlap, parse_statuses


def ranges(*entries: Any) -> tuple[StatusRange, ...]:
    found, wrong = parse_statuses(list(entries), "retry_on")
    assert wrong == []
    return found


@pytest.mark.parametrize(
    ("entry", "low", "high", "text"),
    [
        (429, 429, 429, "429"),
        (400, 400, 400, "400"),
        (599, 599, 599, "599"),
        ("503", 503, 503, "503"),
        ("4xx", 400, 499, "4xx"),
        ("5XX", 500, 599, "5xx"),
        (" 5xx ", 500, 599, "5xx"),
        ("400-404", 400, 404, "400-404"),
        ("500 - 503", 500, 503, "500-503"),
        ("409-409", 409, 409, "409-409"),
        ("400-599", 400, 599, "400-599"),
    ],
)
def test_good_entries(entry: Any, low: int, high: int, text: str) -> None:
    assert ranges(entry) == (StatusRange(low, high, text),)


FORMS = 'write a status such as 429, a class "4xx" or "5xx", or a range such as "400-404"'
ONLY = "only error statuses 400 to 599 can be listed"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            200,
            f"200 is a success: the ingress accepted the record, there is nothing to retry; {ONLY}",
        ),
        (
            202,
            f"202 is a success: the ingress accepted the record, there is nothing to retry; {ONLY}",
        ),
        (
            "2xx",
            f"2xx is a success: the ingress accepted the record, there is nothing to retry; {ONLY}",
        ),
        (301, f"301 is a redirect, which Restate's ingress never answers; {ONLY}"),
        ("3xx", f"3xx is a redirect, which Restate's ingress never answers; {ONLY}"),
        (100, f"100 is an informational answer, never a final one; {ONLY}"),
        (600, f"600 is not an HTTP status; {ONLY}"),
        (-1, f"-1 is not an HTTP status; {ONLY}"),
        ("9xx", f"9xx is not an HTTP status; {ONLY}"),
        ("399-404", f"399-404 is a redirect, which Restate's ingress never answers; {ONLY}"),
        ("500-600", f"500-600 is not an HTTP status; {ONLY}"),
        ("404-400", "'404-400': the range runs backwards; write the lower status first"),
        ("5x", f"'5x' is not a status; {FORMS}"),
        ("x5xx", f"'x5xx' is not a status; {FORMS}"),
        ("", f"'' is not a status; {FORMS}"),
        ("4O4", f"'4O4' is not a status; {FORMS}"),
        ("400..404", f"'400..404' is not a status; {FORMS}"),
        ("40-404", f"'40-404' is not a status; {FORMS}"),
        ("server errors", f"'server errors' is not a status; {FORMS}"),
        (429.0, f"429.0 is not a status; {FORMS}"),
        (True, f"true is not a status; {FORMS}"),
        ([429], f"[429] is not a status; {FORMS}"),
        ({"a": 1}, f"{{'a': 1}} is not a status; {FORMS}"),
    ],
)
def test_bad_entries_say_why(entry: Any, problem: str) -> None:
    found, wrong = parse_statuses([409, entry], "dead_letter_on")
    assert wrong == [f"dead_letter_on: {problem}"]
    assert found == (StatusRange(409, 409, "409"),)  # the good entries are kept


@pytest.mark.parametrize("value", [409, "5xx", {"a": 1}, None])
def test_a_list_is_required(value: Any) -> None:
    found, wrong = parse_statuses(value, "block_on")
    assert found == ()
    assert len(wrong) == 1
    assert wrong[0].startswith('block_on must be a list such as [409, "5xx", "400-404"], not ')


def test_an_empty_list_names_nothing() -> None:
    assert parse_statuses([], "retry_on") == ((), [])
    assert not StatusPolicy()
    assert StatusPolicy().treatment(503) is None


POLICY = StatusPolicy(
    retry_on=ranges(409, "425"),
    dead_letter_on=ranges("5xx"),
    block_on=ranges("400-403", 422),
)


@pytest.mark.parametrize(
    ("status", "treatment"),
    [
        (409, "retry"),
        (425, "retry"),
        (500, "dead_letter"),
        (503, "dead_letter"),
        (599, "dead_letter"),
        (400, "block"),
        (401, "block"),
        (403, "block"),
        (422, "block"),
        (404, None),
        (408, None),
        (429, None),
        (410, None),
        (202, None),
        (600, None),
    ],
)
def test_treatment(status: int, treatment: str | None) -> None:
    assert POLICY.treatment(status) == treatment
    assert POLICY


def test_range_membership_is_inclusive_and_only_for_ints() -> None:
    span = StatusRange(400, 404, "400-404")
    assert 400 in span
    assert 404 in span
    assert 399 not in span
    assert 405 not in span
    assert "400" not in span


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (StatusPolicy(retry_on=ranges(409), dead_letter_on=ranges(503)), None),
        (StatusPolicy(retry_on=ranges("4xx"), dead_letter_on=ranges("5xx")), None),
        (StatusPolicy(retry_on=ranges("400-404"), block_on=ranges("405-409")), None),
        (
            StatusPolicy(retry_on=ranges("5xx"), dead_letter_on=ranges(503)),
            (
                "dead_letter_on",
                "status 503 is in both retry_on (5xx) and dead_letter_on (503); a status may be "
                "in one list only",
            ),
        ),
        (
            StatusPolicy(dead_letter_on=ranges("400-410"), block_on=ranges("405-499")),
            (
                "block_on",
                "status 405 is in both dead_letter_on (400-410) and block_on (405-499); a status "
                "may be in one list only",
            ),
        ),
        (
            StatusPolicy(retry_on=ranges(429), block_on=ranges("4xx")),
            (
                "block_on",
                "status 429 is in both retry_on (429) and block_on (4xx); a status may be in one "
                "list only",
            ),
        ),
    ],
)
def test_a_status_in_two_lists_is_named(
    policy: StatusPolicy, expected: tuple[str, str] | None
) -> None:
    assert overlap(policy) == expected


def test_a_status_twice_in_one_list_is_fine() -> None:
    policy = StatusPolicy(retry_on=ranges(409, "400-410", "4xx"))
    assert overlap(policy) is None
    assert policy.treatment(409) == "retry"
