"""The routes in force: the configuration and its compiled router, swapped whole by a reload
(between two fetches, so every record is planned by one set of routes)."""

from __future__ import annotations

from ..config import BridgeConfig
from ..core.routing import Router


class RoutesInForce:
    """The one owner of the running configuration."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.router = Router(config)

    def use(self, config: BridgeConfig) -> None:
        """From now on every record is planned by ``config``'s routes."""
        self.config = config
        self.router = Router(config)

    def __call__(self) -> BridgeConfig:
        return self.config
