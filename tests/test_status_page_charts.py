"""The status page's 15-minute charts in Debian's Chromium (over CDP) against a running bridge:
the records/s series has data, and the summary cards sit on one row at 1280 px."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from tests.helpers import messages_total, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.cdp import Chromium
from tests.stack.kafka_io import Message, create_topics, produce
from tests.test_status_page import ARTIFACTS, chromium

pytestmark = pytest.mark.integration

PATHS = "[...document.querySelectorAll('#{0} path')].map((p) => p.getAttribute('d'))"
NONZERO_RATE = (
    "fetch('/status.json').then((r) => r.json()).then((s) =>"
    " s.history.points.some((p) => p.records_per_s > 0))"
)


async def test_the_charts_draw_the_last_minutes(
    broker: Broker, bridges: BridgeFactory, tmp_path: Path
) -> None:
    topic = unique("charts")
    await create_topics(broker.bootstrap_servers, [topic])
    bridge = bridges.start(recorder(topic, name="orders", key="{key}"), group_id=unique("g"))
    for batch in range(3):  # records arrive over more than one 5 s sample
        await produce(
            broker.bootstrap_servers,
            topic,
            [Message(f"k{i}".encode(), b"{}") for i in range(batch * 20, batch * 20 + 20)],
        )
        await asyncio.sleep(3)

    async def accepted() -> float:
        return messages_total(bridge.metrics(), topic, "orders", "accepted")

    await until(accepted, lambda n: n == 60, "60 accepted", timeout=60)

    async with Chromium(chromium(), tmp_path) as browser:
        await browser.send(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=800,
            deviceScaleFactor=1,
            mobile=False,
        )
        await browser.open(f"http://127.0.0.1:{bridge.metrics_port}/")
        await until(lambda: browser.evaluate(NONZERO_RATE), bool, "a non-zero rate", timeout=30)
        await until(
            lambda: browser.evaluate(PATHS.format("chart-rate")),
            lambda d: bool(d) and all(d),
            "records/s drawn",
            timeout=10,
        )
        rate_y = await browser.evaluate(
            "document.querySelector('#chart-rate path').getAttribute('d')"
        )
        ys = [float(p.split()[1]) for p in rate_y.replace("M", "L").split("L") if p.strip()]
        assert min(ys) < 88, rate_y  # a point above the baseline: a non-zero rate
        for chart in ("chart-errors", "chart-lag"):
            assert all(await browser.evaluate(PATHS.format(chart))), chart
        assert len(await browser.evaluate(PATHS.format("chart-errors"))) == 2
        tops = await browser.evaluate(
            "[...document.querySelectorAll('.card')].map((c) => c.getBoundingClientRect().top)"
        )
        assert len(tops) == 7
        assert len(set(tops)) == 1, tops
        assert await browser.evaluate("document.documentElement.scrollWidth") <= 1280

        ARTIFACTS.mkdir(exist_ok=True)
        shot = await browser.send("Page.captureScreenshot", format="png")
        (ARTIFACTS / f"status-page-charts-{broker.name}.png").write_bytes(
            base64.b64decode(shot["data"])
        )
        assert [e for e in browser.errors if not e.endswith("/favicon.ico)")] == []
