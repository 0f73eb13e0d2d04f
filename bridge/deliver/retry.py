"""The one retry loop of delivery: try, judge the failure, sleep, try again, while the lease holds.

Sending, attaching to an invocation for its reply, producing the reply and producing a dead
letter all retry the same way; only what they try and how they judge a failure differ (the rules
are in :mod:`bridge.deliver.decisions`). Whatever an attempt raises goes to its judge, whatever
its type: nothing a record holds can raise past its own handling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .lease import Lease

R = TypeVar("R")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Again:
    """Try again after ``delay`` seconds; ``counts``: the attempt counts towards the backoff."""

    delay: float
    counts: bool = True


@dataclass(frozen=True, slots=True)
class Done(Generic[R]):
    """What the successful attempt returned."""

    value: R


async def persist(
    lease: Lease,
    attempt: Callable[[int], Awaitable[R]],
    judge: Callable[[Exception, int], Again | S],
) -> Done[R] | S | None:
    """Call ``attempt(n)`` (``n``: the failed attempts that counted so far) until it returns
    (:class:`Done`) or ``judge`` answers anything but :class:`Again` (that answer). ``None`` when
    the lease ended first; a failure after it ended is not judged."""
    failed = 0
    while not lease.ended:
        try:
            return Done(await attempt(failed))
        except Exception as exc:  # every failure goes to the judge, whatever its type
            if lease.ended:
                return None
            verdict = judge(exc, failed)
        if not isinstance(verdict, Again):
            return verdict
        if verdict.counts:
            failed += 1
        await lease.sleep(verdict.delay)
    return None
