"""An asyncio client for Restate's HTTP ingress, the Python counterpart of the Go SDK's
``restateingress``: request-response calls and one-way sends to services, virtual objects and
workflows, delays, idempotency keys, and attach/output of existing invocations.

    from bridge.ingress import Client

    async with Client.from_env() as restate:
        print(await restate.service("Greeter", "greet").request("Ada"))
"""

from ._client import Client, InvocationHandle, Target
from ._errors import (
    ConnectError,
    IngressError,
    IngressTimeout,
    InvalidRequest,
    InvocationError,
    NotReady,
    ResponseError,
)
from ._types import NO_INPUT, SendReceipt, SendStatus

__all__ = [
    "NO_INPUT",
    "Client",
    "ConnectError",
    "IngressError",
    "IngressTimeout",
    "InvalidRequest",
    "InvocationError",
    "InvocationHandle",
    "NotReady",
    "ResponseError",
    "SendReceipt",
    "SendStatus",
    "Target",
]
