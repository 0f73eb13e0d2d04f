"""``RegistryWatch``: routes judged against Restate's registry as it changes, with a fake read of
the admin API (the judgement itself: tests/test_deployments.py; the real thing end to end:
tests/test_registry_stack.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import RouteConfig, parse_config
from bridge.core.controls import Controls
from bridge.core.deployments import DeployedService, read_services
from bridge.operate.metrics import Metrics
from bridge.operate.registry_watch import RegistryWatch, Waits
from tests.helpers import route

GREETER = {"name": "Greeter", "ty": "Service", "handlers": [{"name": "greet"}]}
LATE = {"name": "Late", "ty": "VirtualObject", "handlers": [{"name": "take", "ty": "Exclusive"}]}


def routes(*tables: str) -> tuple[RouteConfig, ...]:
    text = '[kafka]\nbootstrap_servers = "k:9092"\n[restate]\nadmin_url = "http://r:9070"\n'
    text += "\n".join(tables)
    return parse_config(text, Path("routes.toml"), {}).routes


GREET = route(name="greet", topic="t", target="service", service="Greeter", handler="greet")
TAKE = route(name="take", topic="t", target="object", service="Late", handler="take", key="{key}")


class Registry:
    """A fake admin API: what it lists, or the error it raises."""

    def __init__(self, *services: dict[str, object]) -> None:
        self.listing = list(services)
        self.error: Exception | None = None
        self.reads = 0

    async def fetch(self) -> Mapping[str, DeployedService]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return read_services({"services": self.listing})


class World:
    def __init__(self, registry: Registry, running: tuple[RouteConfig, ...]) -> None:
        self.running = running
        self.metrics = Metrics(CollectorRegistry())
        self.changes = 0
        self.watch = RegistryWatch(
            registry.fetch,
            lambda: self.running,
            self.metrics,
            interval=3600,
            admin_url="http://restate:9070",
            changed=self.count,
        )

    def count(self) -> None:
        self.changes += 1

    def unfit_gauge(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value("restate_bridge_route_unfit", {"route": name})


async def test_a_route_waits_until_its_service_is_deployed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry(GREETER)
    world = World(registry, routes(GREET, TAKE))
    watch = world.watch
    assert watch.unfit == {}  # never read: nothing known, nothing held
    assert watch.view()["up"] is False
    with caplog.at_level(logging.INFO, "bridge.operate.registry_watch"):
        await watch.refresh()
    assert list(watch.unfit) == ["take"]
    assert watch.unfit["take"][0].startswith("route 'take': service 'Late' is not registered")
    assert (world.unfit_gauge("take"), world.unfit_gauge("greet")) == (1, 0)
    assert world.changes == 1
    said = "route 'take': service 'Late' is not registered; registered: Greeter: the route does "
    assert said + "not fit Restate's registry; its invocations wait until it does" in caplog.text
    assert watch.view() == {
        "admin_url": "http://restate:9070",
        "up": True,
        "reason": None,
        "unfit_routes": {"take": watch.unfit["take"]},
    }
    await watch.refresh()  # the same verdict: no change to announce
    assert world.changes == 1
    registry.listing.append(LATE)
    with caplog.at_level(logging.INFO, "bridge.operate.registry_watch"):
        await watch.refresh()
    assert watch.unfit == {}
    assert world.unfit_gauge("take") == 0
    assert world.changes == 2
    assert "route 'take' fits Restate's registry now" in caplog.text


async def test_an_unreadable_registry_keeps_the_last_verdict_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry(GREETER)
    world = World(registry, routes(GREET, TAKE))
    await world.watch.refresh()
    registry.error = RuntimeError("Restate admin API at http://restate:9070: refused")
    with caplog.at_level(logging.INFO, "bridge.operate.registry_watch"):
        await world.watch.refresh()
        await world.watch.refresh()
    assert list(world.watch.unfit) == ["take"]
    assert world.watch.view()["reason"] == "Restate admin API at http://restate:9070: refused"
    assert caplog.text.count("cannot read Restate's registry") == 1
    assert world.metrics.registry.get_sample_value("restate_bridge_restate_admin_up") == 0
    registry.error = None
    with caplog.at_level(logging.INFO, "bridge.operate.registry_watch"):
        await world.watch.refresh()
    assert "readable again" in caplog.text
    assert world.metrics.registry.get_sample_value("restate_bridge_restate_admin_up") == 1


async def test_reloaded_routes_are_judged_at_once_against_the_last_answer() -> None:
    registry = Registry(GREETER)
    world = World(registry, routes(GREET))
    await world.watch.refresh()
    assert world.watch.unfit == {}
    world.running = routes(GREET, TAKE)
    assert list(world.watch.unfit) == ["take"]  # no read needed
    world.watch.routes_changed()
    assert world.changes == 1
    world.running = routes(GREET)  # removed again by the next reload
    world.watch.routes_changed()
    assert world.watch.unfit == {}
    assert world.unfit_gauge("take") == 0


async def test_the_watch_reads_again_when_woken_and_every_interval() -> None:
    registry = Registry(GREETER)
    world = World(registry, routes(GREET))
    world.watch._interval = 0.05
    task = asyncio.create_task(world.watch.watch_forever())
    try:
        await asyncio.sleep(0.3)
        assert registry.reads >= 3
        world.watch._interval = 3600
        await asyncio.sleep(0.1)
        before = registry.reads
        world.watch.routes_changed()
        await asyncio.sleep(0.05)
        assert registry.reads == before + 1
    finally:
        task.cancel()


async def test_waits_join_the_operators_pauses_and_the_unfit_routes() -> None:
    registry = Registry(GREETER)
    world = World(registry, routes(GREET, TAKE))
    controls = Controls()
    waits = Waits(controls, world.watch)
    assert not waits.any_paused
    await world.watch.refresh()
    assert waits.any_paused
    assert waits.is_paused("take", "t")
    assert not waits.is_paused("greet", "t")
    controls.set_paused("route", "greet", True)
    assert waits.is_paused("greet", "t")
    unwatched = Waits(controls, None)
    assert unwatched.is_paused("greet", "t")
    assert not unwatched.is_paused("take", "t")
    controls.set_paused("route", "greet", False)
    assert not unwatched.any_paused


TYPED = {
    "name": "Typed",
    "ty": "Service",
    "handlers": [
        {"name": "take", "input_json_schema": {"type": "integer"}},
        {"name": "any", "input_json_schema": True},
        {"name": "broken", "input_json_schema": {"type": "no-such-type"}},
    ],
}


def typed(handler: str, validate: bool = True) -> str:
    extra = "validate_input = true\n" if validate else ""
    return (
        route(name=handler, topic="t", target="service", service="Typed", handler=handler) + extra
    )


async def test_input_schemas_of_validating_routes_are_compiled_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry(TYPED)
    world = World(registry, routes(typed("take"), typed("any"), typed("broken")))
    assert world.watch.input_check("take") is None  # not read yet: nothing to check
    with caplog.at_level(logging.WARNING, "bridge.operate.registry_watch"):
        await world.watch.refresh()
    check = world.watch.input_check("take")
    assert check is not None
    assert check.problem(b'"x"') == "$: 'x' is not of type 'integer'"
    assert world.watch.input_check("any") is None  # `true` constrains nothing
    assert world.watch.input_check("broken") is None  # unusable: said, and sent unchecked
    assert "route 'broken': Typed/broken's input schema is unusable" in caplog.text
    await world.watch.refresh()
    assert world.watch.input_check("take") is check  # the same schema: not compiled again
    assert caplog.text.count("is unusable") == 1
    world.running = routes(typed("take", validate=False))
    assert world.watch.input_check("take") is None  # no longer asked for
