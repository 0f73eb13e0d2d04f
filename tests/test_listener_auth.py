"""The listener's bearer token: every path but ``/healthz``, ``/metrics`` and the page's static
shell needs it; the page asks for it and sends it as a header, never in a URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.config import parse_config
from bridge.operate.metrics import Metrics
from bridge.operate.server import StatusServer
from tests.helpers import route, unique
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.test_status_page import Cells, headless

TOKEN = "listener-" + "9d1e-unique-token"


async def client_for(token: str | None) -> TestClient[object, object]:
    server = StatusServer(
        Metrics(),
        lambda: (True, "consuming"),
        "127.0.0.1",
        0,
        status=lambda: {"ok": 1},
        token=token,
    )
    client: TestClient[object, object] = TestClient(TestServer(server.app()))
    await client.start_server()
    return client


async def test_every_path_but_healthz_metrics_and_the_shell_needs_the_token() -> None:
    client = await client_for(TOKEN)
    try:
        for path in ("/healthz", "/metrics", "/"):
            assert (await client.get(path)).status == 200, path
        for path in ("/status.json", "/readyz", "/nope"):
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": TOKEN},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
            ):
                resp = await client.get(path, headers=headers)
                assert resp.status == 401, (path, headers)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert TOKEN not in await resp.text()
            # a token in the query string is never accepted (it would land in access logs)
            assert (await client.get(f"{path}?token={TOKEN}")).status == 401
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/status.json", headers=ok)).status == 200
        assert (await client.get("/readyz", headers=ok)).status == 200
        assert (await client.get("/nope", headers=ok)).status == 404
    finally:
        await client.close()


async def test_without_a_token_nothing_is_asked_and_the_page_is_locked_down() -> None:
    client = await client_for(None)
    try:
        assert (await client.get("/status.json")).status == 200
        page = await client.get("/")
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'sha256-" in policy
        assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        assert page.headers["Referrer-Policy"] == "no-referrer"
    finally:
        await client.close()


def test_the_token_is_not_in_the_servers_repr() -> None:
    server = StatusServer(Metrics(), lambda: (True, ""), "127.0.0.1", 0, token=TOKEN)
    assert TOKEN not in repr(server)
    assert "token=***" in repr(server)


def test_the_listener_token_comes_from_the_routing_file_options(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(TOKEN + "\n")
    text = (
        f'[kafka]\nbootstrap_servers = "b:9092"\n[metrics]\ntoken_file = "{tmp_path / "t"}"\n'
        + route(topic="t", target="service", service="S", handler="h")
    )
    assert parse_config(text, Path("r.toml"), {}).metrics.token == TOKEN


@pytest.mark.integration
async def test_a_browser_shows_the_page_with_the_token_from_the_fragment(
    broker: Broker, bridges: BridgeFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "listener-token"
    token_file.write_text(TOKEN + "\n")
    proc = bridges.process("bridge")
    proc.token = TOKEN
    routes = bridges.routes(
        route(name="r", topic=unique("t"), target="service", service="S", handler="h"),
        group_id=unique("g"),
        metrics_extra=f'token_file = "{token_file}"\n',
    ).replace("127.0.0.1:0", f"127.0.0.1:{proc.metrics_port}")
    proc.write_routes(routes)
    proc.start()
    base = f"http://127.0.0.1:{proc.metrics_port}/"

    locked = Cells()
    locked.feed(headless(base, tmp_path, "--dump-dom").stdout)
    assert locked.by_id["state"].strip() == "token needed"

    shown = Cells()
    shown.feed(headless(f"{base}#token={TOKEN}", tmp_path, "--dump-dom").stdout)
    assert shown.by_id["state"].strip() == "ready"
    assert [row[0] for row in shown.rows["routes"]] == ["r"]
    assert TOKEN not in proc.log()
