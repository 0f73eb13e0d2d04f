"""bridge.core.durations: friendly and ISO 8601 durations, and the refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.core.durations import DurationError, DurationTooLong, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4s", timedelta(seconds=4)),
        ("500ms", timedelta(milliseconds=500)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2.5s", timedelta(seconds=2.5)),
        ("1d", timedelta(days=1)),
        ("90m", timedelta(minutes=90)),
        ("1m30s", timedelta(seconds=90)),
        ("1s500ms", timedelta(milliseconds=1500)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("  4s  ", timedelta(seconds=4)),
        ("0s", timedelta(0)),
        ("4 s", timedelta(seconds=4)),
    ],
)
def test_friendly_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT2S", timedelta(seconds=2)),
        ("PT1M30S", timedelta(seconds=90)),
        ("P1D", timedelta(days=1)),
        ("PT1H", timedelta(hours=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("pt2s", timedelta(seconds=2)),
    ],
)
def test_iso_8601_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["5", "4 parsecs", "s", "-1s", "4x", "1h30", "ms", "P", "PT", "4s!"]
)
def test_refusals_quote_the_input_and_show_accepted_forms(text: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    message = str(info.value)
    assert message == (f"bad duration {text!r}; write it like '4s', '500ms', '1h30m' or 'PT2S'")


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_duration_is_refused(text: str) -> None:
    with pytest.raises(DurationError, match=r"^empty duration; write it like '4s'"):
        parse_duration(text)


def test_duration_error_is_a_value_error() -> None:
    assert issubclass(DurationError, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "1000000000d",
        "999999999999h",
        "1" * 400 + "s",
        "P99999999999D",
        "P1" + "0" * 20 + "D",
        "9" * 20 + "ms",
    ],
)
def test_absurd_durations_are_refused_never_overflow(text: str) -> None:
    with pytest.raises(DurationTooLong) as info:
        parse_duration(text)
    assert str(info.value).startswith("'")
    assert str(info.value).endswith(" is too long")
    assert isinstance(info.value, DurationError)


def test_long_input_is_cut_in_the_message() -> None:
    with pytest.raises(DurationError) as info:
        parse_duration("x" * 1000)
    assert str(info.value) == (
        f"bad duration {'x' * 40!r}... (1000 characters); "
        "write it like '4s', '500ms', '1h30m' or 'PT2S'"
    )


def test_the_longest_duration_that_fits_is_accepted() -> None:
    assert parse_duration("999999999d") == timedelta(days=999_999_999)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=1), "1ms"),
        (timedelta(days=365), "365d"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5), "1d2h3m4s5ms"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    if value >= timedelta(0):
        assert parse_duration(text) == value
