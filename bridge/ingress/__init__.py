"""An asyncio client for Restate's HTTP ingress, the Python counterpart of the Go SDK's
``restateingress``: request-response calls and one-way sends to services, virtual objects and
workflows, delays, idempotency keys, attach/output of existing invocations, typed outputs
(``output=Type``), and a blocking facade (``SyncClient``) for scripts and CLIs.

    from bridge.ingress import Client

    async with Client.from_env() as restate:
        print(await restate.service("Greeter", "greet").request("Ada"))
"""

from ._admin import AdminClient
from ._client import Client, InvocationHandle, Target, Timeout
from ._errors import (
    ConnectError,
    DecodeError,
    IngressError,
    IngressTimeout,
    InvalidRequest,
    InvocationError,
    NotReady,
    ResponseError,
)
from ._sync import SyncClient, SyncInvocationHandle, SyncTarget
from ._types import NO_INPUT, SendReceipt, SendStatus

__all__ = [
    "NO_INPUT",
    "AdminClient",
    "Client",
    "ConnectError",
    "DecodeError",
    "IngressError",
    "IngressTimeout",
    "InvalidRequest",
    "InvocationError",
    "InvocationHandle",
    "NotReady",
    "ResponseError",
    "SendReceipt",
    "SendStatus",
    "SyncClient",
    "SyncInvocationHandle",
    "SyncTarget",
    "Target",
    "Timeout",
]
