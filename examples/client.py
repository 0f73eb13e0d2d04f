"""Each call of Restate's Go ingress client (``restateingress``), in Python, against the demo.

    make demo                                              # in another terminal
    RESTATE_URL=http://127.0.0.1:8080 python -m examples.client

It calls the demo's services (``examples/handlers.py``): the ``Notifier`` service, the
``Orders`` object and the ``Payment`` workflow. Idempotency keys and ids are new on every run, so
it can run again and again.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from bridge.ingress import Client, SyncClient


async def main() -> None:
    run = uuid.uuid4().hex[:8]
    customer, order_key, payment_id = f"c-{run}", f"order-{run}", f"pay-{run}"
    async with Client.from_env() as restate:  # RESTATE_URL (default http://localhost:8080)
        # Go: restateingress.Service[I, O](client, "Notifier", "send").Request(ctx, input)
        said = await restate.service("Notifier", "send").request(
            {"template": "welcome", "to": "ada@example.com"}
        )
        print(f"request:                  {said}")

        # Go: restateingress.ObjectSend(client, "Orders", key, "place").Send(ctx, input,
        #     restate.WithDelay(time.Second), restate.WithIdempotencyKey(k))
        receipt = await restate.object("Orders", customer, "place").send(
            {"sku": "a", "qty": 1}, delay=timedelta(seconds=1), idempotency_key=order_key
        )
        print(f"send (delayed 1s):        {receipt.invocation_id} {receipt.status}")

        # Go: restateingress.InvocationById[O](client, id).Attach(ctx)
        placed = await restate.invocation(receipt.invocation_id).attach()
        print(f"attach by id:             order number {placed}")

        # Go: restateingress.ObjectInvocationByIdempotencyKey[O](client, "Orders", key,
        #     "place", k).Output(ctx)
        handle = restate.object_invocation("Orders", customer, "place", order_key)
        print(f"output by idempotency key: order number {await handle.output()}")

        # Go: restateingress.Object[I, O](client, "Orders", key, "list_orders").Request(ctx, nil)
        orders = await restate.object("Orders", customer, "list_orders").request()
        print(f"request (shared handler): {orders}")

        # Go: restateingress.WorkflowSend(client, "Payment", id, "run").Send(ctx, input)
        submitted = await restate.workflow("Payment", payment_id).send(
            {"amount": 12.5, "currency": "EUR"}
        )
        print(f"workflow submitted:       {submitted.invocation_id}")

        # Go: restateingress.WorkflowHandle[O](client, "Payment", id).Attach(ctx) / .Output(ctx)
        workflow = restate.workflow_handle("Payment", payment_id)
        print(f"workflow attach:          {await workflow.attach()}")
        print(f"workflow output:          {await workflow.output()}")


def blocking() -> None:
    """The same calls from code without an event loop: ``SyncClient``."""
    with SyncClient.from_env() as restate:
        said = restate.service("Notifier", "send").request({"template": "bye", "to": "bob"})
        print(f"sync request:             {said}")


if __name__ == "__main__":
    asyncio.run(main())
    blocking()
