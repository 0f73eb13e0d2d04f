"""bridge.reload, the admin endpoint and the worker's swap, in-process.

The reloader with a fake file and a fake swap (one reload at a time, what is logged, counted and
answered); ``POST /admin/reload`` on the real listener (method, content type, token); and the
worker's swap around fakes of aiokafka and the dispatcher (the order of drain, commit and
subscribe, what the next records are planned with). The end-to-end proofs, on both brokers, are
in ``tests/test_reload_stack.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import IllegalStateError

from bridge.config import BridgeConfig, RouteConfig, parse_config
from bridge.config.diff import ConfigDiff, diff
from bridge.core.controls import Blocked
from bridge.core.offsets import TopicPartition
from bridge.core.record import Record
from bridge.core.routing import Invocation, Poison
from bridge.operate.metrics import Metrics
from bridge.operate.reload import CannotApply, NotRunning, Reloader, unrunnable
from bridge.operate.server import StatusServer
from bridge.schemas.setup import open_decoder
from tests.test_worker import A, B, FakeConsumer, FakeDelivery, World, msg, submitted

PATH = Path("routes.toml")
HEAD = """
[kafka]
bootstrap_servers = "127.0.0.1:9"
[metrics]
listen = "127.0.0.1:0"
"""


def recorder(name: str = "rec", topic: str = "orders", handler: str = "record") -> str:
    return f"""
[[routes]]
name = "{name}"
topic = "{topic}"
target = "object"
service = "Recorder"
handler = "{handler}"
key = "{{key}}"
"""


def parse(text: str) -> BridgeConfig:
    return parse_config(text, PATH, {})


class Harness:
    """A reloader over a file held in memory, applying into ``self.running``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.running = parse(text)
        self.metrics = Metrics()
        self.applied: list[tuple[BridgeConfig, ConfigDiff]] = []
        self.gate: asyncio.Event | None = None
        self.fail: BaseException | None = None
        self.load_error: Exception | None = None
        self.now = 1000.0
        self.reloader = Reloader(
            running=lambda: self.running,
            load=self.load,
            apply=self.apply,
            metrics=self.metrics,
            clock=lambda: self.now,
        )

    def load(self, running: BridgeConfig) -> BridgeConfig:
        if self.load_error is not None:
            raise self.load_error
        return parse_config(self.text, PATH, {}, running=running)

    async def apply(self, config: BridgeConfig, changes: ConfigDiff) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.applied.append((config, changes))
        self.running = config

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "restate_bridge_reloads_total", {"outcome": outcome}
        )
        return value or 0.0

    def stamp(self) -> float | None:
        return self.metrics.registry.get_sample_value(
            "restate_bridge_config_reload_timestamp_seconds"
        )


# -- the reloader ---------------------------------------------------------------------------------


async def test_an_invalid_file_changes_nothing_and_each_problem_is_logged_as_path_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(HEAD + recorder())
    h.text = HEAD + recorder().replace('target = "object"', 'target = "objekt"') + "\nbogus = 1\n"
    h.now = 2000.0
    with caplog.at_level(logging.ERROR, logger="bridge.operate.reload"):
        report = await h.reloader.reload("SIGHUP")
    assert report.outcome == "invalid"
    assert h.applied == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(report.problems) == 2
    assert errors[:2] == list(report.problems)
    assert all(p.startswith("routes.toml:") for p in report.problems)
    assert report.problems[0].startswith("routes.toml:15: unknown key 'bogus' in [[routes]] #1")
    assert report.problems[1] == (
        "routes.toml:10: target must be one of service, object, workflow, not 'objekt'"
    )
    assert errors[2] == (
        "reload refused: routes.toml has 2 problem(s); still running on the previous routes"
    )
    assert (h.count("invalid"), h.count("applied")) == (1, 0)
    assert h.stamp() == 1000.0, "the routes in force were loaded at start"
    assert h.reloader.last == report
    status, body = report.answer()
    assert status == 400
    assert body == {
        "status": "error",
        "detail": "routes.toml has 2 problem(s); still running on the previous routes",
        "problems": list(report.problems),
    }


async def test_a_valid_file_applies_the_routes_and_keeps_the_other_tables(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(HEAD + recorder())
    h.text = (
        HEAD.replace('"127.0.0.1:9"', '"127.0.0.1:10"\ngroup_id = "other"')
        + "[delivery]\nretry_max = '3s'\n"
        + recorder(handler="recordHeaders")
        + recorder("audit", "audit")
    )
    h.now = 2000.0
    with caplog.at_level(logging.INFO, logger="bridge.operate.reload"):
        report = await h.reloader.reload("admin")
    assert report.outcome == "applied"
    [(config, changes)] = h.applied
    assert [r.name for r in config.routes] == ["rec", "audit"]
    assert config.routes[0].handler == "recordHeaders"
    assert config.kafka == parse(HEAD + recorder()).kafka, "[kafka] needs a restart"
    assert config.delivery.retry_max.total_seconds() == 10
    assert changes.added == ("audit",)
    assert changes.changed == (("rec", ("handler",)),)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "reload: [kafka] changed (bootstrap_servers, group_id): restart to apply",
        "reload: [delivery] changed (retry_max): restart to apply",
        "reload: route rec sends to another target or idempotency key from now on; a record "
        "read again after a crash or rebalance is not deduplicated against what the route sent "
        "before",
    ]
    assert "reload of routes.toml applied: routes added ['audit'], removed [], changed ['rec']" in (
        caplog.text
    )
    assert (h.count("applied"), h.stamp()) == (1, 2000.0)
    status, body = report.answer()
    assert status == 200
    assert body == {
        "status": "ok",
        "changes": {
            "added": ["audit"],
            "removed": [],
            "changed": {"rec": ["handler"]},
            "topics_added": ["audit"],
            "topics_removed": [],
            "resubscribed": True,
        },
        "restart_required": ["kafka", "delivery"],
    }
    assert report.as_json()["restart_required"] == ["kafka", "delivery"]


async def test_one_reload_at_a_time_a_second_request_is_refused_a_signal_waits() -> None:
    h = Harness(HEAD + recorder())
    h.text = HEAD + recorder(handler="recordHeaders")
    h.gate = asyncio.Event()
    first = asyncio.create_task(h.reloader.reload("admin", wait=False))
    await asyncio.sleep(0.05)
    assert h.reloader.busy
    refused = await h.reloader.reload("admin", wait=False)
    assert refused.outcome == "busy"
    assert refused.answer() == (
        409,
        {"status": "error", "detail": "a reload is already running; try again later"},
    )
    queued = asyncio.create_task(h.reloader.reload("SIGHUP"))
    await asyncio.sleep(0.05)
    assert not queued.done()
    h.gate.set()
    assert (await first).outcome == "applied"
    second = await queued
    assert second.outcome == "applied"
    assert second.changes == ConfigDiff(), "the second one found nothing more to change"
    assert h.count("applied") == 2
    assert h.reloader.last == second
    assert not h.reloader.busy


async def test_routes_the_process_cannot_add_are_problems_and_change_nothing() -> None:
    h = Harness(HEAD + recorder())
    h.text = HEAD + recorder() + recorder("r2", "t2") + 'reply_topic = "replies"\n'
    problems = unrunnable(parse(h.text), replies=False)
    assert problems == [
        "routes.toml:15: route 'r2' has a reply_topic, and this process started without reply "
        "routes (their producer and connections are made at start): restart to add the first one"
    ]
    assert unrunnable(parse(h.text), replies=True) == []
    h.fail = CannotApply(problems)
    report = await h.reloader.reload("SIGHUP")
    assert (report.outcome, report.problems) == ("invalid", tuple(problems))
    assert h.count("invalid") == 1


async def test_a_bridge_that_is_not_consuming_refuses_without_counting() -> None:
    h = Harness(HEAD + recorder())
    h.fail = NotRunning("the bridge is starting or stopping; reload when it consumes")
    report = await h.reloader.reload("admin", wait=False)
    assert report.answer() == (
        503,
        {
            "status": "error",
            "detail": "the bridge is starting or stopping; reload when it consumes",
        },
    )
    assert sum(h.count(o) for o in ("applied", "invalid", "failed")) == 0
    assert h.reloader.last is None


async def test_an_unexpected_failure_is_counted_logged_and_answered_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(HEAD + recorder())
    h.fail = RuntimeError("boom")
    with caplog.at_level(logging.ERROR, logger="bridge.operate.reload"):
        report = await h.reloader.reload("admin")
    assert report.answer() == (
        500,
        {"status": "error", "detail": "reload failed: RuntimeError: boom"},
    )
    assert h.count("failed") == 1
    assert "reload of routes.toml failed; still running on the previous routes" in caplog.text


async def test_a_loader_that_raises_is_a_failed_reload_and_the_next_one_works() -> None:
    h = Harness(HEAD + recorder())
    h.load_error = OSError("disk gone")
    report = await h.reloader.reload("SIGHUP")
    assert (report.outcome, report.detail) == ("failed", "reload failed: OSError: disk gone")
    h.load_error = None
    h.text = HEAD + recorder(handler="recordHeaders")
    assert (await h.reloader.reload("SIGHUP")).outcome == "applied"
    assert (h.count("failed"), h.count("applied")) == (1, 1)


def test_every_outcome_starts_at_zero() -> None:
    h = Harness(HEAD + recorder())
    assert [h.count(o) for o in ("applied", "invalid", "failed")] == [0, 0, 0]
    assert h.stamp() == 1000.0


# -- POST /admin/reload ---------------------------------------------------------------------------

TOKEN = "reload-" + "1f2e-token"


async def listener(
    token: str | None, answer: tuple[int, dict[str, Any]]
) -> tuple[TestClient[Any, Any], list[int]]:
    calls: list[int] = []

    async def reload() -> tuple[int, dict[str, Any]]:
        calls.append(1)
        return answer

    server = StatusServer(Metrics(), lambda: (True, ""), "127.0.0.1", 0, token=token, reload=reload)
    client: TestClient[Any, Any] = TestClient(TestServer(server.app()))
    await client.start_server()
    return client, calls


async def test_admin_reload_needs_post_the_token_and_no_foreign_body() -> None:
    client, calls = await listener(TOKEN, (200, {"status": "ok", "changes": {}}))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = await client.post("/admin/reload", headers=headers)
            assert resp.status == 401
        resp = await client.get("/admin/reload", headers=auth)
        assert (resp.status, resp.headers["Allow"]) == (405, "POST")
        assert (await resp.json())["status"] == "error"
        # a form or text body is what a foreign page can send without a preflight
        for body, kind in ((b"a=1", "application/x-www-form-urlencoded"), (b"x", "text/plain")):
            resp = await client.post(
                "/admin/reload", data=body, headers={**auth, "Content-Type": kind}
            )
            assert resp.status == 415, kind
        assert calls == []
        resp = await client.post("/admin/reload", headers=auth)
        assert (resp.status, await resp.json()) == (200, {"status": "ok", "changes": {}})
        resp = await client.post("/admin/reload", headers=auth, json={})
        assert resp.status == 200
        assert calls == [1, 1]
    finally:
        await client.close()


async def test_admin_reload_answers_the_reports_status_and_body() -> None:
    body = {"status": "error", "detail": "x has 1 problem(s)", "problems": ["x:3: bad"]}
    client, _ = await listener(None, (400, body))
    try:
        resp = await client.post("/admin/reload")
        assert (resp.status, await resp.json()) == (400, body)
    finally:
        await client.close()


# -- the worker's swap ----------------------------------------------------------------------------


class SwapConsumer(FakeConsumer):
    """Records subscriptions; after one, aiokafka has no assignment until the rebalance."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.subscribed: list[Any] = []

    def subscribe(self, config: BridgeConfig, listener: Any) -> None:
        self.events.append("subscribe")
        self.subscribed.append(config.topic_pattern or sorted(config.topics))
        self.assigned = set()

    def unsubscribe(self) -> None:
        self.events.append("unsubscribe")

    def pause(self, *tps: TopicPartition) -> None:
        self._owned("pause", tps)
        super().pause(*tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._owned("resume", tps)
        super().resume(*tps)

    def _owned(self, doing: str, tps: Sequence[TopicPartition]) -> None:
        if not set(tps) <= self.assigned:  # aiokafka raises, as here
            self.events.append(f"illegal {doing}")
            raise IllegalStateError(f"No current assignment for partition {tps}")

    async def commit(self, positions: dict[TopicPartition, int]) -> None:
        self.events.append(
            f"commit {sorted((tp.topic, tp.partition, p) for tp, p in positions.items())}"
        )
        await super().commit(positions)


class SwapDispatcher(FakeDelivery):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.routes: list[str] = []

    def flush(self, routes: Any = None) -> None:
        self.events.append("flush" if routes is None else f"flush {sorted(routes)}")

    def configure_routes(self, routes: Sequence[RouteConfig]) -> None:
        self.routes = [r.name for r in routes]


class SwapWorld(World):
    def __init__(self, running: BridgeConfig | None = None) -> None:
        events: list[str] = []
        super().__init__(
            consumer=SwapConsumer(events), dispatcher=SwapDispatcher(events), running=running
        )
        self.events = events
        self.decoders: list[BridgeConfig] = []

    async def swap(self, text: str) -> ConfigDiff:
        new = parse_config(HEAD + text, PATH, {})
        config = dataclasses.replace(self.routes.config, routes=new.routes)
        changes = diff(self.routes.config, config)
        await self.kafka.use_routes(config, changes, self._no_decoder)
        return changes

    async def _no_decoder(self, config: BridgeConfig) -> Any:
        raise AssertionError("no decoder in this test")


def handler_of(item: Invocation | Poison) -> str:
    assert isinstance(item, Invocation)
    return item.handler


async def test_a_route_change_swaps_between_fetches_without_a_drain_or_a_resubscribe() -> None:
    w = SwapWorld()
    w.take(A, 0, 1)
    changes = await w.swap(recorder(handler="recordHeaders"))
    assert changes.changed == (("rec", ("handler",)),)
    w.take(A, 2)
    assert [handler_of(item) for _, item in w.dispatcher.jobs] == [
        "record",
        "record",
        "recordHeaders",
    ], "planned invocations keep their route; the next record gets the new one"
    assert w.events == ["flush ['rec']"], "only the changed route's batches close; no commit"
    assert w.dispatcher.routes == ["rec"]
    assert w.book.tracker.in_progress == 3, "nothing was forgotten or finished by the swap"


async def test_a_topic_change_drains_and_commits_before_it_subscribes() -> None:
    w = SwapWorld()
    w.take(A, 0, 1, 2)
    w.finish(A, 0)

    async def finish_later() -> None:  # in-flight sends finish while the swap drains
        await asyncio.sleep(0.05)
        w.finish(A, 1)
        w.finish(A, 2)

    finishing = asyncio.create_task(finish_later())
    changes = await w.swap(recorder() + recorder("audit", "audit"))
    await finishing
    assert changes.subscription_changed
    assert w.events == ["flush", "commit [('orders', 0, 3)]", "subscribe"], (
        "aiokafka commits nothing of the old partitions once subscribed anew"
    )
    assert w.consumer.subscribed == [["audit", "orders"]]
    # before the rebalance aiokafka has no partitions: the loop must not touch the old ones
    w.kafka.flow.apply(True)
    assert not [e for e in w.events if e.startswith("illegal")]
    # the revocation that follows finds nothing more to drain or commit
    await w.kafka.revoked(w.book.owned)
    assert [e for e in w.events if e.startswith("commit")] == ["commit [('orders', 0, 3)]"]
    w.assign(A, TopicPartition("audit", 0))
    w.take(TopicPartition("audit", 0), 0)
    assert submitted(w, TopicPartition("audit", 0)) == [0]


async def test_records_of_a_topic_no_route_reads_any_more_are_left_uncommitted() -> None:
    w = SwapWorld()
    w.take(A, 0)
    w.finish(A, 0)
    await w.swap(recorder("audit", "audit"))
    w.consumer.assigned = {A}  # the rebalance has not revoked it yet
    w.kafka.intake.take(w.consumer, A, [msg(A, 1), msg(A, 2)])
    assert submitted(w, A) == [0], "a removed topic's record was planned (and would be unrouted)"
    assert w.book.tracker.to_commit() == {}


async def test_a_blocked_partition_stays_blocked_across_a_reload_that_resubscribes() -> None:
    w = SwapWorld()
    w.take(A, 0, 1)
    w.finish(A, 0)
    w.block(A, 1, "rec", "not JSON")
    # the drain leaves the blocked partition out: it would wait for drain_timeout otherwise
    await asyncio.wait_for(w.swap(recorder() + recorder("audit", "audit")), 5)
    assert w.events == ["flush", "commit [('orders', 0, 1)]", "subscribe"]
    await w.kafka.revoked(w.book.owned)
    w.assign(A, B)
    assert w.consumer.paused == {A}, "the blocked partition was fetched again after the reload"
    assert w.book.all_blocked()[A] == Blocked(A, 1, "rec", "not JSON")
    assert w.gauge("restate_bridge_partition_blocked", A) == 1


async def test_the_first_route_with_a_framed_format_gets_a_decoder_on_reload() -> None:
    registry = '\n[schema_registry]\nurl = "http://127.0.0.1:9/apis/ccompat/v7"\n'
    text = HEAD + registry + recorder() + 'value_format = "avro"\n'
    running = parse_config(HEAD + registry + recorder(), PATH, {})
    w = SwapWorld(running)
    assert w.kafka.intake.decoder is None
    async with contextlib.AsyncExitStack() as stack:
        config = dataclasses.replace(running, routes=parse(text).routes)

        async def opened(c: BridgeConfig) -> Any:
            return await open_decoder(c, w.metrics, stack)

        await w.kafka.use_routes(config, diff(running, config), opened)
        decoder = w.kafka.intake.decoder
        assert decoder is not None
        # a record that is not framed is now read as Avro: a dead letter, not a JSON value
        decoded = decoder.decode(Record("orders", 0, 5, 0, b"k", b'{"n": 1}'))
        assert decoded is not None
        [planned] = w.routes.router.plan(decoded)
        assert isinstance(planned, Poison)
        assert "no magic byte" in planned.reason
