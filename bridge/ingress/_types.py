"""Values returned by the ingress client."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class SendStatus(enum.Enum):
    """Whether a one-way send created the invocation or found it already there."""

    ACCEPTED = "Accepted"
    PREVIOUSLY_ACCEPTED = "PreviouslyAccepted"


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """What the ingress answers (202) to a one-way ``send``."""

    invocation_id: str
    status: SendStatus
    execution_time: datetime | None = None
    """When a delayed invocation is scheduled to run (UTC); ``None`` when not delayed."""

    @property
    def duplicate(self) -> bool:
        """True when an earlier send with the same idempotency key (or workflow id) won."""
        return self.status is SendStatus.PREVIOUSLY_ACCEPTED


class _NoInput(enum.Enum):
    NO_INPUT = "NO_INPUT"

    def __repr__(self) -> str:
        return "NO_INPUT"


NO_INPUT = _NoInput.NO_INPUT
"""Default for ``input``: send no body and no content-type (for handlers that take no input).

``None`` is different: it sends the JSON document ``null``.
"""

NoInput = _NoInput
