"""A service deployed late, mid-test: a virtual object named by ``$LATE_SERVICE`` (a name unique
to the test, since the session's Restate never forgets a registration) that keeps what it gets.

Run: ``LATE_SERVICE=Name hypercorn tests.stack.late_handlers:app --bind 127.0.0.1:PORT``.
"""

from __future__ import annotations

import os
from typing import Any

import restate
from restate import ObjectContext, ObjectSharedContext, VirtualObject

late = VirtualObject(os.environ.get("LATE_SERVICE", "Latecomer"))


@late.handler()
async def take(ctx: ObjectContext, value: Any) -> int:
    seen: list[Any] = await ctx.get("seen") or []
    seen.append(value)
    ctx.set("seen", seen)
    return len(seen)


@late.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> list[Any]:
    return await ctx.get("seen") or []


app = restate.app(services=[late])
