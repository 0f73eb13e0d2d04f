"""Durations as written in routes.toml and Kafka headers: ``4s``, ``500ms``, ``1h30m``, ``PT2S``."""

from __future__ import annotations

import re
from datetime import timedelta

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


class DurationError(ValueError):
    """A duration that cannot be parsed; the message quotes it and shows the accepted forms."""


def parse_duration(text: str) -> timedelta:
    """Parse ``"4s"``, ``"500ms"``, ``"1h30m"``, ``"2.5s"`` or ISO 8601 ``"PT2S"``.

    A unit is always required: a bare ``"5"`` is ambiguous and refused.
    """
    raw = text.strip()
    if not raw:
        raise DurationError("empty duration; write it like '4s', '500ms', '1h30m' or 'PT2S'")
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
        raise DurationError(
            f"bad duration {text!r}; write it like '4s', '500ms', '1h30m' or 'PT2S'"
        )
    return total
