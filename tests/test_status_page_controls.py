"""The status page's controls, clicked for real in Debian's Chromium (driven over the DevTools
protocol, tests/stack/cdp.py) against a running bridge with a listener token: Pause and Resume
on a route, Retry and Skip… on a blocked partition. What the clicks did is read back from
``/status.json``, ``/metrics``, the counting proxy and Restate's state, never from the page."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bridge.ingress import Client
from tests.helpers import recorder, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.cdp import Chromium
from tests.stack.kafka_io import create_topics, produce, read_topic
from tests.stack.proxy import IngressProxy
from tests.test_operator_controls import (
    TOKEN,
    blocked_rows,
    delivered,
    keyed,
    quiet,
    refuse_offsets,
    started_with_token,
)
from tests.test_status_page import ARTIFACTS, chromium

pytestmark = pytest.mark.integration


async def shown(browser: Chromium, selector: str, want: str) -> None:
    """The page (refreshing every 2 s) shows ``want`` in ``selector``."""
    await until(lambda: browser.text(selector), lambda got: got == want, f"{selector} = {want!r}")


def button(**data: str) -> str:
    return "button" + "".join(f'[data-{k}="{v}"]' for k, v in data.items())


async def test_the_page_pauses_resumes_and_releases_for_real(
    broker: Broker,
    bridges: BridgeFactory,
    proxy: IngressProxy,
    client: Client,
    tmp_path: Path,
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, parking, tag = unique("page"), unique("parking"), unique("b")
    await create_topics(bootstrap, [topic, parking])
    bridge: BridgeProcess = started_with_token(
        bridges,
        recorder(topic, name="orders", key=f"{tag}-{{key}}"),
        tmp_path,
        group_id=unique("g"),
        ingress_url=proxy.url,
    )
    records = [keyed(n, keys=2) for n in range(10)]
    await produce(bootstrap, topic, records)
    await delivered(client, tag, records)

    async with Chromium(chromium(), tmp_path) as browser:
        await browser.open(f"http://127.0.0.1:{bridge.metrics_port}/#token={TOKEN}")
        await shown(browser, "#state", "ready")
        pause = button(action="pause", kind="route", name="orders")
        await until(lambda: browser.evaluate(f"!!document.querySelector('{pause}')"), bool, "")

        # Pause: nothing more is sent
        await browser.click(pause)
        await until(
            lambda: bridge.status_json()["controls"]["paused_routes"], lambda r: r == ["orders"], ""
        )
        assert bridge.value("restate_bridge_route_paused", route="orders") == 1
        await shown(browser, "#control-result", "ok: /admin/routes/orders/pause")
        await until(lambda: browser.text("#routes tr td:last-child"), lambda t: "paused" in t, "")
        more = [keyed(n, keys=2) for n in range(10, 20)]
        await produce(bootstrap, topic, more)
        sent = await quiet(proxy, 2.0)
        assert sent == 10
        assert bridge.per_partition("restate_bridge_partition_paused", topic) == {0: 1.0}

        # Resume: everything arrives once, in order
        await browser.click(button(action="resume", kind="route", name="orders"))
        await delivered(client, tag, records + more)
        keys = [s.idempotency_key for s in proxy.answered()]
        assert len(keys) == len(set(keys)) == 20
        assert bridge.value("restate_bridge_route_paused", route="orders") == 0

        # Retry a blocked partition
        refuse_offsets(proxy, {(0, 20): 1})
        again = [keyed(n, keys=2) for n in range(20, 22)]
        await produce(bootstrap, topic, again)
        retry = button(action="retry", topic=topic, partition="0", offset="20")
        await until(lambda: browser.evaluate(f"!!document.querySelector('{retry}')"), bool, "")
        assert [r["offset"] for r in blocked_rows(bridge)] == [20]
        await browser.click(retry)
        await delivered(client, tag, records + more + again)
        await until(lambda: bridge.committed(topic).get(0), lambda c: c == 22, "committed 22")

        # Skip… it to a topic, with a reason typed into the form
        refuse_offsets(proxy, {(0, 22): -1})
        last = [keyed(n, keys=2) for n in range(22, 24)]
        await produce(bootstrap, topic, last)
        skip = button(action="skip", topic=topic, partition="0", offset="22")
        await until(lambda: browser.evaluate(f"!!document.querySelector('{skip}')"), bool, "")
        await browser.click(skip)
        assert await browser.evaluate("document.getElementById('skip-form').hidden") is False
        await shown(browser, "#skip-what", f"{topic}-0@22")
        await browser.fill("#skip-reason", "bad record, <b>checked</b> by hand")
        await browser.fill("#skip-topic", parking)
        await browser.click("#skip-confirm")
        [parked] = await read_topic(bootstrap, parking, 1)
        assert json.loads(parked.value) == {"n": 22}
        assert dict(parked.headers)["bridge.skip_reason"] == b"bad record, <b>checked</b> by hand"
        await until(lambda: bridge.committed(topic).get(0), lambda c: c == 24, "committed 24")
        await delivered(client, tag, [*records, *more, *again, last[1]])
        assert bridge.value("restate_bridge_releases_total", action="retry") == 1
        assert bridge.value("restate_bridge_releases_total", action="skip") == 1
        # the reason is shown as text in the last releases, never as markup
        await until(
            lambda: browser.text("#releases"), lambda t: "<b>checked</b>" in (t or ""), "shown"
        )
        assert await browser.evaluate("document.querySelectorAll('#releases b').length") == 0

        ARTIFACTS.mkdir(exist_ok=True)
        shot = await browser.send("Page.captureScreenshot", format="png")
        (ARTIFACTS / f"status-page-controls-{broker.name}.png").write_bytes(
            base64.b64decode(shot["data"])
        )
        # the browser's own favicon request is refused without the token: not the page's doing
        assert [e for e in browser.errors if not e.endswith("/favicon.ico)")] == []
