"""Durations as written in routes.toml and Kafka headers: ``4s``, ``500ms``, ``1h30m``, ``PT2S``.

Parsing never raises anything but :class:`DurationError`: a header holding ``"1000000000d"``, a
thousand digits or any other text is refused with a message, never an ``OverflowError``.
"""

from __future__ import annotations

import re
from datetime import timedelta

from .record import excerpt

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_FRIENDLY = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_ISO = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)
_FORMS = "write it like '4s', '500ms', '1h30m' or 'PT2S'"


class DurationError(ValueError):
    """A duration that cannot be parsed; the message quotes it and shows the accepted forms."""


class DurationTooLong(DurationError):
    """A well-formed duration beyond what ``timedelta`` holds, such as ``"1000000000d"``."""


def parse_duration(text: str) -> timedelta:
    """Parse ``"4s"``, ``"500ms"``, ``"1h30m"``, ``"2.5s"`` or ISO 8601 ``"PT2S"``.

    A unit is always required: a bare ``"5"`` is ambiguous and refused. A duration beyond what
    ``timedelta`` holds (about 2.7 million years) is refused as too long.
    """
    raw = text.strip()
    if not raw:
        raise DurationError(f"empty duration; {_FORMS}")
    try:
        total = _parse(raw)
    except (OverflowError, ValueError):  # float('1' * 400) is inf; timedelta(days=1e10) overflows
        raise DurationTooLong(f"{excerpt(text)} is too long") from None
    if total is None:
        raise DurationError(f"bad duration {excerpt(text)}; {_FORMS}")
    return total


def _parse(raw: str) -> timedelta | None:
    iso = _ISO.fullmatch(raw.upper()) if raw[:1] in "Pp" else None
    if iso is not None and any(iso.groupdict().values()):
        parts = {k: float(v) for k, v in iso.groupdict().items() if v}
        return timedelta(
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    pos, total = 0, timedelta()
    compact = raw.replace(" ", "")
    for match in _FRIENDLY.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(compact):
        return None
    return total


def format_duration(value: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` -> ``"1h30m"``: the friendly form, for messages."""
    millis = int(value / timedelta(milliseconds=1))
    if millis == 0:
        return "0s"
    sign, millis = ("-", -millis) if millis < 0 else ("", millis)
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, millis = divmod(millis, size)
        if count:
            out.append(f"{count}{unit}")
    if millis:
        out.append(f"{millis}ms")
    return sign + "".join(out)
