"""What Restate has deployed, as its admin API lists it, and whether each route fits it.

``GET /services`` on the admin port names every registered service with its kind
(``Service``, ``VirtualObject``, ``Workflow``), its handlers (kind, ``public``,
``input_json_schema``) and how long Restate remembers idempotency keys
(``idempotency_retention``) and finished workflows (``workflow_completion_retention``).

:func:`read_services` reads that answer, whatever shape it has; :func:`route_problems` says
what stops a route from working (the ingress would refuse every record it sends);
:func:`dedup_window` says how far back a replay is still deduplicated.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .durations import DurationError, parse_duration
from .record import excerpt

KINDS = {"service": "Service", "object": "VirtualObject", "workflow": "Workflow"}
"""A route's ``target`` and the service kind Restate must have registered for it."""
_TARGET_OF = {kind: target for target, kind in KINDS.items()}


@dataclass(frozen=True, slots=True)
class DeployedHandler:
    name: str
    kind: str | None
    """``Exclusive``, ``Shared``, ``Workflow``; ``None`` for a plain service's handlers."""
    public: bool
    input_schema: Any = None
    """The handler's ``input_json_schema`` (``None``: none published)."""


@dataclass(frozen=True, slots=True)
class DeployedService:
    name: str
    kind: str
    public: bool
    handlers: Mapping[str, DeployedHandler]
    idempotency_retention: timedelta | None = None
    workflow_retention: timedelta | None = None
    """``workflow_completion_retention``: how long a finished workflow's id stays taken."""


class ServicesError(ValueError):
    """The admin API's answer is not a list of services as Restate writes it."""


def read_services(doc: Any) -> dict[str, DeployedService]:
    """The services of a ``GET /services`` answer (parsed JSON), by name.

    Raises :class:`ServicesError` naming what is missing; unknown fields are ignored (newer
    servers add some), and a retention that cannot be read counts as unknown.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), list):
        raise ServicesError(f'expected {{"services": [...]}}, got {excerpt(repr(doc))}')
    services: dict[str, DeployedService] = {}
    for index, item in enumerate(doc["services"]):
        if not isinstance(item, dict):
            raise ServicesError(f"services[{index}] is not an object")
        name, kind, handlers = item.get("name"), item.get("ty"), item.get("handlers")
        if not isinstance(name, str) or not isinstance(kind, str) or not isinstance(handlers, list):
            raise ServicesError(f"services[{index}] lacks a name, a ty or its handlers")
        services[name] = DeployedService(
            name=name,
            kind=kind,
            public=item.get("public") is not False,
            handlers={h.name: h for h in (_handler(name, h) for h in handlers)},
            idempotency_retention=retention(item.get("idempotency_retention")),
            workflow_retention=retention(item.get("workflow_completion_retention")),
        )
    return services


def _handler(service: str, item: Any) -> DeployedHandler:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ServicesError(f"a handler of {service!r} has no name")
    kind = item.get("ty")
    return DeployedHandler(
        name=item["name"],
        kind=kind if isinstance(kind, str) else None,
        public=item.get("public") is not False,
        input_schema=item.get("input_json_schema"),
    )


_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Zµ]+)")
_UNIT_SECONDS = {
    **dict.fromkeys(("ns", "nsec", "nanos", "nanosecond", "nanoseconds"), 1e-9),
    **dict.fromkeys(("us", "µs", "usec", "micros", "microsecond", "microseconds"), 1e-6),
    **dict.fromkeys(("ms", "msec", "millis", "millisecond", "milliseconds"), 1e-3),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400.0),
    **dict.fromkeys(("M", "month", "months"), 30.44 * 86400.0),
    **dict.fromkeys(("y", "year", "years"), 365.25 * 86400.0),
}


def retention(value: Any) -> timedelta | None:
    """A retention as Restate writes it (``"1d"``, ``"1h 30m"``, ``"1day 12h"``, ``"PT24H"``);
    ``None`` when absent or unreadable (then nothing is compared against it)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[:1] in "Pp":
        try:
            return parse_duration(text)
        except DurationError:
            return None
    parts = _PART.findall(text)
    if not parts or _PART.sub("", text).strip(" ,") != "":
        return None
    seconds = 0.0
    for number, unit in parts:
        scale = _UNIT_SECONDS.get(unit) or _UNIT_SECONDS.get(unit.lower())
        if scale is None:
            return None
        seconds += float(number) * scale
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        return None


def route_problems(
    name: str, target: str, service: str, handler: str, services: Mapping[str, DeployedService]
) -> list[str]:
    """Why the ingress would refuse every record of route ``name`` (``target``, ``service``,
    ``handler`` as the routing file writes them); an empty list when it fits."""
    found = services.get(service)
    if found is None:
        close = difflib.get_close_matches(service, list(services), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(sorted(services)) or "none"
        return [
            f"route {name!r}: service {service!r} is not registered{hint}; registered: {listed}"
        ]
    problems = []
    wanted = KINDS.get(target)
    if wanted is not None and found.kind != wanted:
        fits = _TARGET_OF.get(found.kind)
        fix = f': write target = "{fits}"' if fits else ""
        problems.append(
            f'route {name!r}: target = "{target}" needs a {wanted}, '
            f"but {service!r} is a {found.kind}{fix}"
        )
    deployed = found.handlers.get(handler)
    if deployed is None:
        close = difflib.get_close_matches(handler, list(found.handlers), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(sorted(found.handlers)) or "none"
        problems.append(
            f"route {name!r}: {service!r} has no handler {handler!r}{hint}; it has: {listed}"
        )
    elif not (deployed.public and found.public):
        private = f"{service}/{handler}" if found.public else f"service {service!r}"
        problems.append(
            f"route {name!r}: {private} is not public: the ingress refuses it "
            "(make it public, or route to a public handler)"
        )
    return problems


def dedup_window(
    service: str, handler: str, services: Mapping[str, DeployedService]
) -> timedelta | None:
    """How long after a record's invocation Restate still recognises a resend of it (its
    idempotency key; for a workflow's run also its workflow id): a replay older than this runs
    again. ``None``: unknown."""
    found = services.get(service)
    if found is None:
        return None
    windows = [found.idempotency_retention]
    deployed = found.handlers.get(handler)
    if found.kind == "Workflow" and deployed is not None and deployed.kind == "Workflow":
        windows.append(found.workflow_retention)
    known = [w for w in windows if w is not None]
    return max(known) if known else None


def describe(span: timedelta) -> str:
    """``1d``, ``36h``, ``90m``, ``45s``: the largest unit that writes ``span`` whole."""
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
