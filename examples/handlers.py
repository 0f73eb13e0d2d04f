"""Example Restate handlers for the demo and the compose stack, written with the Python SDK.

- ``Orders`` (virtual object, keyed by customer): keeps each customer's orders in arrival order.
- ``Payment`` (workflow, keyed by payment id): authorises once, however often its record arrives;
  ``status`` reads its state.
- ``Notifier`` (service): pretends to send a notification, after ``after_seconds`` if given
  (a durable timer: the docs' timeout examples use it as a slow handler).

Serve: ``hypercorn examples.handlers:app --bind 0.0.0.0:9080``, then register the deployment.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import restate
from restate import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    WorkflowContext,
    WorkflowSharedContext,
)

orders = restate.VirtualObject("Orders")


@orders.handler()
async def place(ctx: ObjectContext, order: dict[str, Any]) -> int:
    placed: list[dict[str, Any]] = await ctx.get("orders") or []
    placed.append(order)
    ctx.set("orders", placed)
    return len(placed)


@orders.handler(kind="shared")
async def list_orders(ctx: ObjectSharedContext) -> list[dict[str, Any]]:
    return await ctx.get("orders") or []


payment = restate.Workflow("Payment")


@payment.main()
async def run(ctx: WorkflowContext, request: dict[str, Any]) -> str:
    amount = float(request.get("amount", 0))
    if amount <= 0:
        raise restate.TerminalError(f"refusing a payment of {amount}", status_code=400)
    ctx.set("status", "authorised")
    return f"authorised {amount:.2f} {request.get('currency', 'EUR')}"


@payment.handler()
async def status(ctx: WorkflowSharedContext) -> str:
    """The payment's state while or after it runs (a workflow's shared handler)."""
    return await ctx.get("status") or "pending"


notifier = restate.Service("Notifier")


@notifier.handler()
async def send(ctx: Context, message: dict[str, Any]) -> str:
    if after := float(message.get("after_seconds", 0)):
        await ctx.sleep(timedelta(seconds=after))
    return f"sent {message.get('template', 'message')} to {message.get('to', 'someone')}"


app = restate.app(services=[orders, payment, notifier])
