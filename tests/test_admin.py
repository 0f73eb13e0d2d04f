"""The admin API's HTTP shape (bridge.admin on the real listener app, in-process): the token,
the content type, foreign origins, bodies of every kind, and the JSON answers. The bridge side is
a recording fake here; tests/test_controls_e2e.py drives a real bridge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.core.controls import (
    ControlKind,
    NotBlocked,
    ReleaseRequest,
    ReleaseRetry,
    ReleaseSkip,
    UnknownName,
)
from bridge.core.offsets import TopicPartition
from bridge.operate.metrics import Metrics
from bridge.operate.server import OPEN_PATHS, StatusServer

TOKEN = "admin-" + "5f0a-unique-token"
JSON = {"Content-Type": "application/json"}


@dataclass
class FakeOps:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def pause(self, kind: ControlKind, name: str, paused: bool) -> dict[str, Any]:
        if name == "nope":
            raise UnknownName(kind, name, ["orders"])
        self.calls.append(("pause", kind, name, paused))
        return {kind: name, "paused": paused}

    async def release(self, tp: TopicPartition, request: ReleaseRequest) -> dict[str, Any]:
        if tp.partition == 9:
            raise NotBlocked(f"partition {tp.topic}-{tp.partition} is not blocked")
        self.calls.append(("release", tp, request))
        return {"topic": tp.topic, "partition": tp.partition, "action": request.action}


@pytest.fixture
async def admin() -> Any:
    ops = FakeOps()

    async def make(token: str | None = None) -> TestClient[Any, Any]:
        server = StatusServer(
            Metrics(), lambda: (True, "ok"), "127.0.0.1", 0, token=token, admin=ops
        )
        client: TestClient[Any, Any] = TestClient(TestServer(server.app()))
        await client.start_server()
        made.append(client)
        return client

    made: list[TestClient[Any, Any]] = []
    yield ops, make
    for client in made:
        await client.close()


async def answer(resp: Any) -> tuple[int, dict[str, Any]]:
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json()


async def test_pause_and_resume_answer_ok_with_or_without_an_empty_json_body(admin: Any) -> None:
    ops, make = admin
    client = await make()
    assert await answer(await client.post("/admin/routes/orders/pause")) == (
        200,
        {"status": "ok", "route": "orders", "paused": True},
    )
    resp = await client.post("/admin/topics/orders/resume", data=b"{}", headers=JSON)
    assert await answer(resp) == (200, {"status": "ok", "topic": "orders", "paused": False})
    # names are percent-decoded: any route name can be reached
    assert (await client.post("/admin/routes/a%2Fb%20%3Cc%3E/pause")).status == 200
    assert ops.calls == [
        ("pause", "route", "orders", True),
        ("pause", "topic", "orders", False),
        ("pause", "route", "a/b <c>", True),
    ]


async def test_release_bodies_reach_the_bridge_parsed(admin: Any) -> None:
    ops, make = admin
    client = await make()
    bodies = [
        b'{"action": "retry"}',
        b'{"action": "skip", "reason": "bad data"}',
        b'{"action": "skip", "reason": "bad data", "topic": "parking-lot"}',
    ]
    for body in bodies:
        resp = await client.post("/admin/partitions/orders/3/release", data=body, headers=JSON)
        status, doc = await answer(resp)
        assert status == 200, doc
        assert doc["status"] == "ok"
    tp = TopicPartition("orders", 3)
    assert ops.calls == [
        ("release", tp, ReleaseRetry()),
        ("release", tp, ReleaseSkip("bad data")),
        ("release", tp, ReleaseSkip("bad data", "parking-lot")),
    ]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "detail"),
    [
        # the content type: only JSON, and a body needs one
        ("/admin/routes/orders/pause", b"{}", {"Content-Type": "text/plain"}, 415, "text/plain"),
        (
            "/admin/partitions/orders/3/release",
            b"action=retry",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "send Content-Type: application/json",
        ),
        # (aiohttp's client says application/octet-stream for a body without a content type)
        ("/admin/partitions/orders/3/release", b'{"action": "retry"}', {}, 415, "octet-stream"),
        # foreign pages
        (
            "/admin/routes/orders/pause",
            b"",
            {"Sec-Fetch-Site": "cross-site"},
            403,
            "another origin",
        ),
        ("/admin/routes/orders/pause", b"", {"Sec-Fetch-Site": "same-site"}, 403, "another origin"),
        ("/admin/routes/orders/pause", b"", {"Origin": "http://evil.example"}, 403, "origin"),
        ("/admin/routes/orders/pause", b"", {"Origin": "null"}, 403, "origin"),
        # bodies
        ("/admin/partitions/orders/3/release", b"{", JSON, 400, "the body is not JSON"),
        ("/admin/partitions/orders/3/release", b"", JSON, 400, 'send {"action": "retry"}'),
        ("/admin/partitions/orders/3/release", b"[1]", JSON, 400, "send a JSON object"),
        ("/admin/partitions/orders/3/release", b'{"action": "skip"}', JSON, 400, '"reason"'),
        ("/admin/partitions/orders/3/release", b'{"action": "x"}', JSON, 400, '"action" must'),
        ("/admin/partitions/orders/3/release", b"\xff\xfe", JSON, 400, "not JSON"),
        ("/admin/partitions/orders/x/release", b'{"action": "retry"}', JSON, 400, "partition"),
        ("/admin/partitions/orders/-1/release", b'{"action": "retry"}', JSON, 400, "partition"),
        (
            "/admin/partitions/orders/99999999999/release",
            b'{"action": "retry"}',
            JSON,
            400,
            "partition must be a number",
        ),
        (
            "/admin/partitions/orders/3/release",
            b'{"action": "skip", "reason": "x", "topic": "no spaces"}',
            JSON,
            400,
            "topic",
        ),
        ("/admin/routes/orders/pause", b'{"why": 1}', JSON, 400, "pause takes no body"),
        ("/admin/partitions/orders/3/release", b"x" * 70_000, JSON, 413, "larger than"),
        # the bridge's refusals
        ("/admin/routes/nope/pause", b"", {}, 404, "known routes: orders"),
        ("/admin/partitions/orders/9/release", b'{"action": "retry"}', JSON, 409, "not blocked"),
        # other admin paths
        ("/admin/reset", b"", {}, 404, "no such admin endpoint"),
        ("/admin/routes/orders/stop", b"", {}, 404, "no such admin endpoint"),
    ],
)
async def test_refusals_are_json_with_a_reason(
    admin: Any, path: str, body: bytes, headers: dict[str, str], status: int, detail: str
) -> None:
    ops, make = admin
    client = await make()
    got, doc = await answer(await client.post(path, data=body, headers=headers))
    assert (got, doc["status"]) == (status, "error"), doc
    assert detail in doc["detail"]
    assert ops.calls == []


async def test_a_read_of_an_admin_path_is_405_and_a_same_origin_page_is_allowed(
    admin: Any,
) -> None:
    ops, make = admin
    client = await make()
    status, doc = await answer(await client.get("/admin/routes/orders/pause"))
    assert status == 405
    assert "use POST" in doc["detail"]
    origin = f"http://{client.host}:{client.port}"
    for headers in ({"Origin": origin}, {"Sec-Fetch-Site": "same-origin", "Origin": origin}):
        assert (await client.post("/admin/routes/orders/pause", headers=headers)).status == 200
    assert len(ops.calls) == 2


async def test_with_a_token_every_admin_path_needs_it(admin: Any) -> None:
    ops, make = admin
    client = await make(TOKEN)
    assert not any(p.startswith("/admin") for p in OPEN_PATHS)
    for path in ("/admin/routes/orders/pause", "/admin/partitions/orders/3/release", "/admin/x"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = await client.post(path, data=b'{"action": "retry"}', headers=JSON | headers)
            assert resp.status == 401, path
    assert ops.calls == []
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.post("/admin/routes/orders/pause", headers=good)).status == 200
    assert ops.calls == [("pause", "route", "orders", True)]


async def test_a_body_without_a_content_type_is_refused(admin: Any) -> None:
    ops, make = admin
    client = await make()
    resp = await client.post(
        "/admin/partitions/orders/3/release",
        data=b'{"action": "retry"}',
        skip_auto_headers=["Content-Type"],
    )
    status, doc = await answer(resp)
    assert (status, doc["detail"]) == (415, "a body needs Content-Type: application/json")
    assert ops.calls == []
