"""A batch handler that makes a batch route's delivery exactly once in effect.

A batch route delivers each record at least once: after a crash the bridge reads again from its
last commit and may form different batches, so a record already applied can come back inside a
new batch (with a new idempotency key). Each item carries its coordinates, and Kafka offsets only
grow within a partition: an object that remembers the last offset it applied per (topic,
partition) and skips items at or below it applies every record once, in order.

``BatchLedger`` (virtual object, keyed like the route's ``key``): ``apply`` takes a batch (a JSON
array of items, see docs/batch-routes.md) and appends each new item's value to the
object's state; ``applied`` and ``skipped`` read it back. Restate runs one invocation of a key at
a time and commits its state changes together with its completion, so "apply, then remember the
offset" cannot be torn in two. An effect outside Restate belongs in ``ctx.run`` (journaled) with
its own idempotency (for example the item's coordinates as the idempotency key downstream).

Serve: ``hypercorn examples.batch_handlers:app --bind 0.0.0.0:9080``, then register it. Route::

    [[routes]]
    topic = "ledger"
    target = "object"
    service = "BatchLedger"
    handler = "apply"
    key = "{key}"
    batch = { max_records = 100, max_bytes = "1MiB", max_wait = "50ms" }
"""

from __future__ import annotations

from typing import Any

import restate
from restate import ObjectContext, ObjectSharedContext

batch_ledger = restate.VirtualObject("BatchLedger")


def fresh_items(
    items: list[dict[str, Any]], last: dict[str, int]
) -> tuple[list[dict[str, Any]], int]:
    """The items not applied yet (offset above the last applied one of their partition), and
    how many were skipped; ``last`` is updated in place."""
    fresh: list[dict[str, Any]] = []
    skipped = 0
    for item in items:
        where = f"{item['topic']}/{item['partition']}"
        if item["offset"] <= last.get(where, -1):
            skipped += 1
            continue
        last[where] = item["offset"]
        fresh.append(item)
    return fresh, skipped


# --8<-- [start:apply]
@batch_ledger.handler()
async def apply(ctx: ObjectContext, items: list[dict[str, Any]]) -> int:
    """Apply the batch's new items; returns how many were new."""
    last: dict[str, int] = await ctx.get("last_offsets") or {}
    fresh, skipped = fresh_items(items, last)
    if fresh:
        applied: list[Any] = await ctx.get("applied") or []
        applied.extend(item["value"] for item in fresh)  # the effect of this example
        ctx.set("applied", applied)
        ctx.set("last_offsets", last)
    if skipped:
        ctx.set("skipped", (await ctx.get("skipped") or 0) + skipped)
    return len(fresh)


# --8<-- [end:apply]


@batch_ledger.handler(kind="shared")
async def applied(ctx: ObjectSharedContext) -> list[Any]:
    return await ctx.get("applied") or []


@batch_ledger.handler(kind="shared")
async def skipped(ctx: ObjectSharedContext) -> int:
    return await ctx.get("skipped") or 0


app = restate.app(services=[batch_ledger])
