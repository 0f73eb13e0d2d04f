"""What a reload would change: routes by name, the subscription, and the tables it cannot apply.

Pure: two :class:`BridgeConfig` values in, a :class:`ConfigDiff` out. A reload applies the
``[[routes]]`` only; every other table keeps its running value until a restart, and the diff
names the ones the file changed (by key, never by value: some hold secrets).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .schema import SECTIONS, BridgeConfig, RouteConfig

RESTART_SECTIONS = tuple(SECTIONS)
"""Tables a reload keeps as they were at start (every one but the routes): connections,
listener, group, limits, tracing."""

TARGET_KEYS = frozenset({"target", "service", "handler", "key", "idempotency_key"})
"""Route keys that decide an invocation's idempotency: Restate deduplicates by target and key."""


def subscription(config: BridgeConfig) -> tuple[str | None, tuple[str, ...]]:
    """What the consumer subscribes to: the combined pattern, or else the literal topics."""
    pattern = config.topic_pattern
    return pattern, () if pattern is not None else tuple(sorted(config.topics))


@dataclass(frozen=True)
class ConfigDiff:
    """The running config against a reloaded one."""

    added: tuple[str, ...] = ()
    """Routes only the new file has, by name (a renamed route is removed and added)."""
    removed: tuple[str, ...] = ()
    changed: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Routes in both whose settings differ, with the keys that differ."""
    topics_added: tuple[str, ...] = ()
    """Literal topics (``topic``/``topics``) the new routes read and the old ones did not."""
    topics_removed: tuple[str, ...] = ()
    subscription_changed: bool = False
    """The consumer must subscribe anew: other topics, or another ``topic_pattern``."""
    restart_required: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Tables the file changed that a reload does not apply, with the keys that differ."""

    @property
    def changed_routes(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.changed)

    @property
    def retargeted(self) -> tuple[str, ...]:
        """Changed routes whose records get other idempotency scopes than before the reload (a
        record read again after a crash would not be deduplicated against its first send)."""
        return tuple(name for name, keys in self.changed if TARGET_KEYS & set(keys))

    @property
    def stale_routes(self) -> frozenset[str]:
        """Routes whose open batches must close before the new routes plan anything."""
        return frozenset(self.removed) | frozenset(self.changed_routes)

    def as_json(self) -> dict[str, Any]:
        """The ``changes`` of ``POST /admin/reload`` and of ``/status.json`` ``last_reload``."""
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": {name: list(keys) for name, keys in self.changed},
            "topics_added": list(self.topics_added),
            "topics_removed": list(self.topics_removed),
            "resubscribed": self.subscription_changed,
        }


def diff(old: BridgeConfig, new: BridgeConfig) -> ConfigDiff:
    """Compare the running config with a reloaded one (both already validated)."""
    before = {r.name: r for r in old.routes}
    after = {r.name: r for r in new.routes}
    changed = tuple(
        (name, keys)
        for name, route in after.items()
        if name in before and (keys := _route_keys(before[name], route))
    )
    return ConfigDiff(
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in before if name not in after),
        changed=changed,
        topics_added=tuple(sorted(set(new.topics) - set(old.topics))),
        topics_removed=tuple(sorted(set(old.topics) - set(new.topics))),
        subscription_changed=subscription(old) != subscription(new),
        restart_required=tuple(
            (section, keys)
            for section in RESTART_SECTIONS
            if (keys := _section_keys(old, new, section))
        ),
    )


def _route_keys(old: RouteConfig, new: RouteConfig) -> tuple[str, ...]:
    # ``line`` is where the route stands in the file: moving it changes nothing
    return tuple(
        f.name
        for f in dataclasses.fields(RouteConfig)
        if f.name != "line" and getattr(old, f.name) != getattr(new, f.name)
    )


def _section_keys(old: BridgeConfig, new: BridgeConfig, section: str) -> tuple[str, ...]:
    before, after = getattr(old, section), getattr(new, section)
    keys = [
        f.name
        for f in dataclasses.fields(before)
        if getattr(before, f.name) != getattr(after, f.name)
    ]
    if section == "restate" and before.admin_token_env is None and before.admin_token_file is None:
        keys = [k for k in keys if k != "admin_token"]  # the ingress token's: named as `token`
    if section == "restate" and before.token_file is not None and "token_file" not in keys:
        # the running bridge re-reads its token file by itself: a rotated token is no change
        keys = [k for k in keys if k != "token"]
    return tuple(keys)
