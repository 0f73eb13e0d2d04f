"""Which ingress answers a route retries, dead-letters or blocks on: ``retry_on``,
``dead_letter_on`` and ``block_on``, each a list of HTTP statuses (``429``), classes (``"5xx"``)
or ranges (``"400-404"``).

Pure: parsing a list (with a sentence for every mistake) and looking a status up. A status no
list names keeps the default treatment of :func:`bridge.deliver.decisions.after_send_failure`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Treatment = Literal["retry", "dead_letter", "block"]
LIST_KEYS: dict[str, Treatment] = {
    "retry_on": "retry",
    "dead_letter_on": "dead_letter",
    "block_on": "block",
}
"""The route keys, and the treatment each gives the statuses it names."""

LOWEST, HIGHEST = 400, 599
"""Only error answers can be given a treatment."""

FORMS = 'a status such as 429, a class "4xx" or "5xx", or a range such as "400-404"'

_CLASS = re.compile(r"([1-9])xx", re.IGNORECASE)
_RANGE = re.compile(r"(\d{3})\s*-\s*(\d{3})")
_CODE = re.compile(r"\d{3}")


@dataclass(frozen=True, slots=True)
class StatusRange:
    """An inclusive range of HTTP statuses, as the routing file wrote it (``text``)."""

    low: int
    high: int
    text: str

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and self.low <= status <= self.high


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    """A route's status lists; empty lists keep today's behaviour for every status."""

    retry_on: tuple[StatusRange, ...] = ()
    dead_letter_on: tuple[StatusRange, ...] = ()
    block_on: tuple[StatusRange, ...] = ()

    def treatment(self, status: int) -> Treatment | None:
        """What the route's lists say about ``status``; ``None`` when no list names it."""
        if any(status in r for r in self.retry_on):
            return "retry"
        if any(status in r for r in self.dead_letter_on):
            return "dead_letter"
        if any(status in r for r in self.block_on):
            return "block"
        return None

    def __bool__(self) -> bool:
        return bool(self.retry_on or self.dead_letter_on or self.block_on)


def parse_statuses(value: Any, key: str) -> tuple[tuple[StatusRange, ...], list[str]]:
    """The ranges a ``retry_on`` / ``dead_letter_on`` / ``block_on`` list names, and the
    problems found (one sentence each, naming ``key``)."""
    if not isinstance(value, list):
        return (), [f'{key} must be a list such as [409, "5xx", "400-404"], not {_short(value)}']
    found: list[StatusRange] = []
    problems: list[str] = []
    for entry in value:
        parsed = _entry(entry)
        if isinstance(parsed, str):
            problems.append(f"{key}: {parsed}")
        else:
            found.append(parsed)
    return tuple(found), problems


def _entry(entry: Any) -> StatusRange | str:
    """One list entry as a range, or what is wrong with it."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        wrong = _out_of_bounds(entry, str(entry))
        return wrong if wrong is not None else StatusRange(entry, entry, str(entry))
    if not isinstance(entry, str):
        shown = str(entry).lower() if isinstance(entry, bool) else _short(entry)
        return f"{shown} is not a status; write {FORMS}"
    text = entry.strip()
    if (cls := _CLASS.fullmatch(text)) is not None:
        digit = int(cls.group(1))
        low, high = digit * 100, digit * 100 + 99
        wrong = _out_of_bounds(low, text)
        return wrong if wrong is not None else StatusRange(low, high, text.lower())
    if (span := _RANGE.fullmatch(text)) is not None:
        low, high = int(span.group(1)), int(span.group(2))
        for end in (low, high):
            wrong = _out_of_bounds(end, text)
            if wrong is not None:
                return wrong
        if low > high:
            return f"{text!r}: the range runs backwards; write the lower status first"
        return StatusRange(low, high, f"{low}-{high}")
    if _CODE.fullmatch(text) is not None:
        code = int(text)
        wrong = _out_of_bounds(code, text)
        return wrong if wrong is not None else StatusRange(code, code, text)
    return f"{_short(entry)} is not a status; write {FORMS}"


def _out_of_bounds(status: int, text: str) -> str | None:
    if LOWEST <= status <= HIGHEST:
        return None
    if 200 <= status <= 299:
        why = "is a success: the ingress accepted the record, there is nothing to retry"
    elif 300 <= status <= 399:
        why = "is a redirect, which Restate's ingress never answers"
    elif 100 <= status <= 199:
        why = "is an informational answer, never a final one"
    else:
        why = "is not an HTTP status"
    return f"{text} {why}; only error statuses 400 to 599 can be listed"


def overlap(policy: StatusPolicy) -> tuple[str, str] | None:
    """The later of the first two lists that share a status, and a sentence naming it; ``None``
    when none do: one status, one treatment."""
    lists = [(key, getattr(policy, key)) for key in LIST_KEYS]
    for i, (key_a, ranges_a) in enumerate(lists):
        for key_b, ranges_b in lists[i + 1 :]:
            for a in ranges_a:
                for b in ranges_b:
                    low, high = max(a.low, b.low), min(a.high, b.high)
                    if low <= high:
                        return key_b, (
                            f"status {low} is in both {key_a} ({a.text}) and {key_b} ({b.text}); "
                            "a status may be in one list only"
                        )
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
