"""Whether the Restate ingress is reachable: set by sends, checked by a probe while down."""

from __future__ import annotations

import asyncio
import logging

from .ingress import Client, IngressError
from .metrics import Metrics

log = logging.getLogger(__name__)


class IngressHealth:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._up = asyncio.Event()
        self.reason = "not checked yet"
        metrics.ingress_up.set(0)

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def mark_up(self) -> None:
        if not self._up.is_set():
            log.info("Restate ingress is reachable")
            self._up.set()
            self._metrics.ingress_up.set(1)

    def mark_down(self, reason: str) -> None:
        self.reason = reason
        if self._up.is_set():
            log.warning("Restate ingress unreachable (%s): pausing fetches", reason)
            self._up.clear()
            self._metrics.ingress_up.set(0)

    async def wait_up(self) -> None:
        await self._up.wait()

    async def probe_forever(self, client: Client, interval: float = 2.0) -> None:
        """Ask ``/restate/health`` every ``interval`` seconds, so a silent outage shows too."""
        while True:
            try:
                await client.health()
            except IngressError as exc:
                self.mark_down(str(exc))
            else:
                self.mark_up()
            await asyncio.sleep(interval)
