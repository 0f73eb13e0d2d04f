"""A blocking facade over ``Client``, for scripts, CLIs and threaded programs.

It runs one ``Client`` on a private event loop in a daemon thread and waits for each call's
result, so it shares everything with the asyncio client: the transport, the codec, the typed
outputs, the timeouts and the error classes. Why not a blocking HTTP client: that would be a
second transport with a second translation of transport errors (TLS, resets, timeouts) to keep
in step with the first; the thread costs one idle thread per client. And why not a loop in the
caller's thread (``asyncio.Runner``): calls from several threads at once, as a web app makes,
would then need a lock and run one at a time; here they run concurrently over one pool.

    with SyncClient("http://localhost:8080") as restate:
        print(restate.service("Greeter", "greet").request("Ada"))

Ctrl-C while a call waits cancels that call's request and raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

from ._client import DEFAULT_URL, Client, Headers, InvocationHandle, Target, Timeout
from ._types import NO_INPUT, SendReceipt

T = TypeVar("T")


class SyncClient:
    """The blocking twin of ``Client``: the same constructor, methods and errors, without
    ``await``. Safe to share between threads. Use it as a context manager or call ``close``.
    """

    def __init__(self, url: str = DEFAULT_URL, **kwargs: Any) -> None:
        self._client = kwargs.pop("_client", None) or Client(url, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_env(cls, **kwargs: Any) -> SyncClient:
        """As ``Client.from_env``: ``$RESTATE_URL`` and ``$RESTATE_AUTH_TOKEN``."""
        return cls(_client=Client.from_env(**kwargs))

    @property
    def url(self) -> str:
        return self._client.url

    def set_token(self, token: str | None) -> None:
        self._client.set_token(token)

    def __repr__(self) -> str:
        return f"Sync{self._client!r}"

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the loop thread. Safe to call twice."""
        with self._lock:
            self._closed = True
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:  # never used: nothing to close
            return
        asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("Cannot reopen a client instance, once it has been closed.")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="restate-ingress-sync", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            loop = self._start()
        except RuntimeError:
            coro.close()
            raise
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise asyncio.CancelledError from None
        except BaseException:  # KeyboardInterrupt while waiting: stop the request too
            future.cancel()
            raise

    # -- targets ---------------------------------------------------------------------------

    def service(self, service: str, handler: str, *, scope: str | None = None) -> SyncTarget:
        return SyncTarget(self, self._client.service(service, handler, scope=scope))

    def object(self, name: str, key: str, handler: str, *, scope: str | None = None) -> SyncTarget:
        return SyncTarget(self, self._client.object(name, key, handler, scope=scope))

    def workflow(
        self, name: str, workflow_id: str, handler: str = "run", *, scope: str | None = None
    ) -> SyncTarget:
        return SyncTarget(self, self._client.workflow(name, workflow_id, handler, scope=scope))

    def invocation(self, invocation_id: str) -> SyncInvocationHandle:
        return SyncInvocationHandle(self, self._client.invocation(invocation_id))

    def service_invocation(
        self, service: str, handler: str, idempotency_key: str
    ) -> SyncInvocationHandle:
        handle = self._client.service_invocation(service, handler, idempotency_key)
        return SyncInvocationHandle(self, handle)

    def object_invocation(
        self, name: str, key: str, handler: str, idempotency_key: str
    ) -> SyncInvocationHandle:
        handle = self._client.object_invocation(name, key, handler, idempotency_key)
        return SyncInvocationHandle(self, handle)

    def workflow_handle(self, name: str, workflow_id: str) -> SyncInvocationHandle:
        return SyncInvocationHandle(self, self._client.workflow_handle(name, workflow_id))

    def health(self, *, timeout: Timeout = 5.0) -> None:
        self._run(self._client.health(timeout=timeout))


@dataclass(frozen=True, slots=True)
class SyncTarget:
    """A handler to call or send to, blocking; see ``Target``."""

    client: SyncClient
    target: Target

    @property
    def kind(self) -> Literal["service", "object", "workflow"]:
        return self.target.kind

    @property
    def scope(self) -> str | None:
        return self.target.scope

    def send_url(self, *, delay: timedelta | None = None) -> str:
        return self.target.send_url(delay=delay)

    @overload
    def request(
        self,
        input: Any = ...,
        *,
        output: None = None,
        idempotency_key: str | None = ...,
        headers: Headers | None = ...,
        content_type: str | None = ...,
        timeout: Timeout = ...,
        limit_key: str | None = ...,
    ) -> Any: ...

    @overload
    def request(
        self,
        input: Any = ...,
        *,
        output: type[T],
        idempotency_key: str | None = ...,
        headers: Headers | None = ...,
        content_type: str | None = ...,
        timeout: Timeout = ...,
        limit_key: str | None = ...,
    ) -> T: ...

    def request(
        self,
        input: Any = NO_INPUT,
        *,
        output: Any = None,
        idempotency_key: str | None = None,
        headers: Headers | None = None,
        content_type: str | None = None,
        timeout: Timeout = "default",
        limit_key: str | None = None,
    ) -> Any:
        """Call the handler and wait for its output; see ``Target.request``."""
        return self.client._run(
            self.target.request(
                input,
                output=output,
                idempotency_key=idempotency_key,
                headers=headers,
                content_type=content_type,
                timeout=timeout,
                limit_key=limit_key,
            )
        )

    def send(
        self,
        input: Any = NO_INPUT,
        *,
        delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: Headers | None = None,
        content_type: str | None = None,
        timeout: Timeout = "default",
        limit_key: str | None = None,
    ) -> SendReceipt:
        """Enqueue an invocation; see ``Target.send``."""
        return self.client._run(
            self.target.send(
                input,
                delay=delay,
                idempotency_key=idempotency_key,
                headers=headers,
                content_type=content_type,
                timeout=timeout,
                limit_key=limit_key,
            )
        )


@dataclass(frozen=True, slots=True)
class SyncInvocationHandle:
    """An existing invocation, blocking; see ``InvocationHandle``."""

    client: SyncClient
    handle: InvocationHandle

    @overload
    def attach(self, *, output: None = None, timeout: Timeout = ...) -> Any: ...

    @overload
    def attach(self, *, output: type[T], timeout: Timeout = ...) -> T: ...

    def attach(self, *, output: Any = None, timeout: Timeout = "default") -> Any:
        """Wait until the invocation completes; see ``InvocationHandle.attach``."""
        return self.client._run(self.handle.attach(output=output, timeout=timeout))

    @overload
    def output(self, *, output: None = None, timeout: Timeout = ...) -> Any: ...

    @overload
    def output(self, *, output: type[T], timeout: Timeout = ...) -> T: ...

    def output(self, *, output: Any = None, timeout: Timeout = "default") -> Any:
        """The output if completed, else ``NotReady``; see ``InvocationHandle.output``."""
        return self.client._run(self.handle.output(output=output, timeout=timeout))
