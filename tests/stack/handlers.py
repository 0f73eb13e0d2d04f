"""Restate handlers for the tests, written with the Python SDK and served by hypercorn.

- ``Greeter`` (service): plain calls, terminal errors, slow calls, no-input calls, header echo.
- ``Recorder`` (virtual object): appends everything it receives to its state, so tests can assert
  order and exactly-once effects per key.
- ``Signup`` (workflow): ``run`` waits for ``approve`` and returns a greeting; ``status`` peeks.
- ``Payments`` (service): ``charge`` answers a JSON object (typed outputs, README examples).
- ``BatchLedger`` (virtual object, from ``examples/batch_handlers.py``): applies batches of a
  batch route once per record, skipping items at or below the last applied offset.
- ``BatchSink`` (virtual object): keeps every batch it receives, as sent, for batch-route tests.
- ``Relay`` (service): ``sendWithKey`` sends with an idempotency key no HTTP header could carry
  (non-ASCII), so lookups of such keys have something to find.
- ``Greeter/internal``: a handler the ingress refuses (``ingress_private``), and ``Forgetful``
  (service): idempotency keys kept one hour, for the checks against Restate's registry.

Run: ``hypercorn tests.stack.handlers:app --bind 127.0.0.1:PORT``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import restate
from restate import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    Service,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)
from restate.serde import BytesSerde

from examples.batch_handlers import batch_ledger

greeter = Service("Greeter")


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    return f"Hello, {name}!"


@greeter.handler()
async def fail(ctx: Context, message: str) -> str:
    raise restate.TerminalError(message, status_code=400)


@greeter.handler()
async def slow(ctx: Context, seconds: float) -> str:
    # not ctx.sleep: a handler that is simply slow to answer, to exercise client timeouts
    await asyncio.sleep(seconds)
    return "done"


@greeter.handler()
async def ping(ctx: Context) -> str:
    return "pong"


@greeter.handler()
async def headers(ctx: Context, _: Any = None) -> dict[str, str]:
    return dict(ctx.request().headers)


@greeter.handler(
    name="rawEcho",
    accept="application/octet-stream",
    content_type="application/octet-stream",
    input_serde=BytesSerde(),
    output_serde=BytesSerde(),
)
async def raw_echo(ctx: Context, body: bytes) -> bytes:
    return body


@greeter.handler(ingress_private=True)
async def internal(ctx: Context, name: str) -> str:
    return name


forgetful = Service("Forgetful", idempotency_retention=timedelta(hours=1))


@forgetful.handler()
async def note(ctx: Context, value: Any) -> None:
    return None


recorder = VirtualObject("Recorder")


@recorder.handler()
async def record(ctx: ObjectContext, value: Any) -> int:
    seen: list[Any] = await ctx.get("seen") or []
    seen.append(value)
    ctx.set("seen", seen)
    return len(seen)


@recorder.handler(name="recordHeaders")
async def record_headers(ctx: ObjectContext, value: Any) -> int:
    entries: list[Any] = await ctx.get("seen") or []
    entries.append({"value": value, "headers": dict(ctx.request().headers)})
    ctx.set("seen", entries)
    return len(entries)


@recorder.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> list[Any]:
    return await ctx.get("seen") or []


@recorder.handler(kind="shared")
async def key(ctx: ObjectSharedContext) -> str:
    return ctx.key()


signup = Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    ctx.set("status", "waiting")
    approver: str = await ctx.promise("approval", type_hint=str).value()
    ctx.set("status", "done")
    return f"{email} approved by {approver}"


@signup.handler()
async def approve(ctx: WorkflowSharedContext, approver: str) -> None:
    await ctx.promise("approval", type_hint=str).resolve(approver)


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str:
    return await ctx.get("status") or "unknown"


payments = Service("Payments")


@payments.handler()
async def charge(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    return {
        "transaction_id": f"tx-{request['order_id']}",
        "status": "charged",
        "amount": request["amount"],
    }


relay = Service("Relay")


@relay.handler(name="sendWithKey")
async def send_with_key(ctx: Context, request: dict[str, Any]) -> str:
    handle = ctx.generic_send(
        request["service"],
        request["handler"],
        json.dumps(request["input"]).encode(),
        key=request.get("key"),
        idempotency_key=request["idempotency_key"],
    )
    return await handle.invocation_id()


batch_sink = VirtualObject("BatchSink")


@batch_sink.handler()
async def take(ctx: ObjectContext, items: list[Any]) -> int:
    batches: list[Any] = await ctx.get("batches") or []
    batches.append(items)
    ctx.set("batches", batches)
    return len(batches)


@batch_sink.handler(kind="shared")
async def batches(ctx: ObjectSharedContext) -> list[Any]:
    return await ctx.get("batches") or []


app = restate.app(
    services=[greeter, recorder, signup, payments, relay, batch_ledger, batch_sink, forgetful]
)
