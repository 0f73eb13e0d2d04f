"""The ingress client's exceptions, sorted by what the caller does next.

    IngressError                 base: .status, .code, .message, .retryable, .retry_after, .reason
    ├── ConnectError             the ingress could not be reached          (retryable)
    ├── IngressTimeout           no answer within the timeout; also a builtin TimeoutError
    │                                                                      (retryable)
    ├── InvalidRequest           no request could be built from the input  (never retryable)
    ├── DecodeError              the answer does not fit the asked ``output=`` type
    │                                                                      (never retryable)
    └── ResponseError            the ingress answered with an error status
        ├── InvocationError      the handler itself failed terminally      (never retryable)
        └── NotReady             output asked before the invocation ended  (470; poll or attach)

``retryable`` follows Restate's own rule: connection failures, timeouts, 408, 425, 429 and 5xx are
worth retrying; other 4xx (400, 404, 409, 422, ...) and every handler failure are not. A 401 or
403 not from a handler is retryable too: it refuses the client's credentials (a token being
rotated, a proxy's policy), which no record can fix and a new token does.
``asyncio.CancelledError`` is never wrapped. Arguments of the wrong type or value (a ``delay``
that is not a ``timedelta``, a negative timeout, an ``output=`` type the decoder cannot build)
raise ``TypeError`` / ``ValueError`` before anything is sent: they are programming errors, not
ingress errors.
"""

from __future__ import annotations

RETRYABLE_STATUSES = frozenset({401, 403, 408, 425, 429})


class IngressError(Exception):
    """Base class of every error raised by ``bridge.ingress.Client``.

    Everything a caller needs to decide what to do next is here, on every error: ``retryable``,
    ``retry_after`` (seconds the server asked to wait, or ``None``), ``source`` and ``reason``.
    """

    status: int | None = None
    code: int | None = None
    source: str | None = None
    retry_after: float | None = None
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def reason(self) -> str:
        """A short, low-cardinality label for metrics: ``connect``, ``timeout``, ``http_404``,
        ``http_5xx``, ``invalid_request``, ``other``."""
        return "other"


class ConnectError(IngressError):
    """The ingress could not be reached (refused, reset, DNS). Retryable."""

    retryable = True

    @property
    def reason(self) -> str:
        return "connect"


class IngressTimeout(IngressError, TimeoutError):
    """The ingress did not answer within the request's timeout. Retryable.

    Also a builtin ``TimeoutError``, so ``except TimeoutError`` catches it as it catches
    ``asyncio.timeout``'s. With an idempotency key, retrying is safe: the ingress deduplicates the
    second attempt. The invocation itself may still run (or be running) in Restate.
    """

    retryable = True

    @property
    def reason(self) -> str:
        return "timeout"


class InvalidRequest(IngressError):
    """The request could not be built: a header value with CR, LF or NUL, an invalid URL, ...

    Nothing was sent, and the same input would fail the same way again. Never retryable.
    """

    @property
    def reason(self) -> str:
        return "invalid_request"


class DecodeError(IngressError):
    """The ingress answered, but its body does not fit the ``output=`` type the caller asked for
    (or a JSON answer is not JSON). ``body`` holds the raw answer; ``invocation_id`` the
    invocation's id when the ingress named it. Never retryable: the same output decodes the same
    way again."""

    def __init__(
        self, message: str, *, body: bytes = b"", invocation_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.body = body
        self.invocation_id = invocation_id

    @property
    def reason(self) -> str:
        return "decode"


class ResponseError(IngressError):
    """The ingress answered with an error status.

    ``source`` is ``"ingress"`` when Restate refused the request (unknown service, bad delay, ...)
    and ``"invocation"`` when the handler ran and failed; ``None`` from servers older than 1.7.4.
    """

    status: int

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | None = None,
        source: str | None = None,
        retry_after: float | None = None,
        invocation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.source = source
        self.retry_after = retry_after
        self.invocation_id = invocation_id
        self.retryable = source != "invocation" and (status in RETRYABLE_STATUSES or status >= 500)

    @property
    def reason(self) -> str:
        return "http_5xx" if self.status >= 500 else f"http_{self.status}"

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"{self.status}{where}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, code={self.code}, "
            f"source={self.source!r}, message={self.message!r})"
        )


class InvocationError(ResponseError):
    """The handler ended with a terminal error; ``status`` and ``code`` are the handler's."""


class NotReady(ResponseError):
    """``output()`` was asked for an invocation that has not completed yet (HTTP 470)."""
