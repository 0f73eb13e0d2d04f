"""A reader of Restate's admin API (port 9070): what is registered, for checks before sending."""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Any

import orjson

from ._client import Client
from ._errors import DecodeError
from ._http import without_credentials


class AdminClient:
    """Reads Restate's admin API over the same transport, limits and error tree as
    :class:`Client` (``ConnectError``, ``IngressTimeout``, ``ResponseError`` ...)::

        async with AdminClient("http://localhost:9070") as admin:
            listing = await admin.services()

    ``token`` is sent as ``Authorization: Bearer`` (never shown); ``ssl_context`` verifies an
    ``https://`` admin endpoint. Every call waits ``timeout`` seconds at most.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._client = Client(
            url, token=token, ssl_context=ssl_context, timeout=timeout, max_connections=2
        )

    def __repr__(self) -> str:
        return f"AdminClient(url={without_credentials(self._client.url)!r})"

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def services(self) -> Any:
        """``GET /services``: every registered service with its kind, handlers and retention,
        as Restate writes them (parsed JSON)."""
        return await self.get_json("/services")

    async def get_json(self, path: str) -> Any:
        """``GET path``, its JSON answer parsed; a body that is not JSON is a
        :class:`DecodeError`."""
        response = await self._client._request("GET", path)  # the package's one request path
        try:
            return orjson.loads(response.body)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(
                f"GET {path}: the answer is not JSON: {exc}", body=response.body
            ) from exc
