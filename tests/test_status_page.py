"""The status page in a real headless browser (Debian's Chromium) against a running bridge."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bridge.config import parse_config
from bridge.core.controls import Blocked, Controls, ReleaseSkip
from bridge.core.offsets import TopicPartition
from bridge.operate.metrics import Metrics
from bridge.operate.status import RecentDeadLetters, snapshot
from tests.helpers import eventually, messages_total, recorder, route, unique
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import Broker
from tests.stack.cdp import FLAGS
from tests.stack.kafka_io import Message, create_topics, produce

PAGE_FILE = Path(__file__).resolve().parents[1] / "bridge" / "operate" / "status_page.html"

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (make system-deps installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def headless(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium(),
            *FLAGS,
            f"--user-data-dir={tmp / 'chromium'}",
            "--virtual-time-budget=6000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


class Cells(HTMLParser):
    """Text by element id, and the rows (lists of cell texts) of every ``tbody`` by id."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self._stack: list[str | None] = []
        self._body: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        self._stack.append(ident)
        if tag == "tbody" and ident:
            self._body = ident
            self.rows[ident] = []
        elif tag == "tr" and self._body:
            self.rows[self._body].append([])
        elif tag == "td" and self._body:
            self._cell = []
        if ident:
            self.by_id[ident] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._stack:
            self._stack.pop()
        if tag == "td" and self._body and self._cell is not None:
            self.rows[self._body][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._body = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for ident in self._stack:
            if ident:
                self.by_id[ident] += data


def test_the_page_reads_only_partition_fields_that_status_json_has() -> None:
    config = parse_config(
        '[kafka]\nbootstrap_servers = "k:9092"\n[[routes]]\nname = "r"\ntopic = "t"\n'
        'target = "service"\nservice = "S"\nhandler = "h"\n',
        Path("routes.toml"),
        {},
    )
    metrics = Metrics()
    metrics.consumer_lag.labels("t", "0").set(3)
    metrics.committed_lag.labels("t", "0").set(9)
    metrics.oldest_unfinished_age.labels("t", "0").set(12.5)
    metrics.partition_blocked.labels("t", "0").set(1)
    blocked = {TopicPartition("t", 0): Blocked(TopicPartition("t", 0), 41, "r", "not JSON")}
    status = snapshot(config, metrics, RecentDeadLetters(), (True, "ok"), blocked)
    [row] = status["partitions"]
    assert row == {
        "topic": "t",
        "partition": 0,
        "lag": 3.0,
        "committed_lag": 9.0,
        "oldest_unfinished_age": 12.5,
        "committed": None,
        "blocked": 1.0,
        "blocked_at": 41,
        "blocked_route": "r",
        "blocked_reason": "not JSON",
    }
    page = PAGE_FILE.read_text()
    partitions_js = page[page.index("const num = ") : page.index('fill("dead"')]
    used = set(re.findall(r"\bp\.(\w+)", partitions_js))
    assert used <= set(row), used - set(row)
    assert {"committed_lag", "oldest_unfinished_age", "blocked_reason"} <= used


@pytest.mark.integration
async def test_status_page_shows_what_metrics_export(
    broker: Broker, bridges: BridgeFactory, tmp_path: Path
) -> None:
    topic, dlq, tag = unique("status"), unique("dlq"), unique("s")
    await create_topics(broker.bootstrap_servers, [topic, dlq], partitions=2)
    routes = recorder(topic, name="orders", key=f"{tag}-{{value.customer}}")
    messages = [
        Message(b"k", f'{{"customer": "c{i % 3}"}}'.encode(), partition=i % 2) for i in range(30)
    ]
    messages += [Message(b"bad", b"this is not JSON", partition=1)]
    await produce(broker.bootstrap_servers, topic, messages)
    bridge = bridges.start(routes, group_id=unique("g"), dead_letter_topic=dlq)

    async def done() -> float:
        samples = bridge.metrics()
        return messages_total(samples, topic, "orders", "accepted") + messages_total(
            samples, topic, "orders", "dead_lettered"
        )

    assert await eventually(done, 31.0) == 31.0

    async def committed() -> float:
        return bridge.metric("restate_bridge_committed_offset")

    assert await eventually(committed, 31.0) == 31.0  # 15 + 16 on the two partitions
    url = f"http://127.0.0.1:{bridge.metrics_port}/"
    dom = headless(url, tmp_path, "--dump-dom").stdout
    samples = bridge.metrics()
    page = Cells()
    page.feed(dom)

    assert page.by_id["state"].strip() == "ready"
    accepted = messages_total(samples, topic, "orders", "accepted")
    dead = messages_total(samples, topic, "orders", "dead_lettered")
    assert accepted == 30
    assert float(page.by_id["accepted"]) == accepted
    assert float(page.by_id["dlq"]) == dead == 1
    assert float(page.by_id["inflight"]) == bridge.metric("restate_bridge_in_flight") == 0
    assert float(page.by_id["lag"]) == bridge.metric("restate_bridge_consumer_lag")

    [orders] = page.rows["routes"]
    assert orders[:3] == ["orders", topic, "object Recorder/record"]
    assert [float(x) for x in orders[3:6]] == [accepted, 0.0, dead]
    latency_sum = bridge.metric('restate_bridge_ingress_latency_seconds_sum{route="orders"}')
    latency_count = bridge.metric('restate_bridge_ingress_latency_seconds_count{route="orders"}')
    assert float(orders[7]) == pytest.approx(1000 * latency_sum / latency_count, abs=0.051)

    partitions = {(row[0], int(row[1])): row for row in page.rows["partitions"]}
    assert set(partitions) == {(topic, 0), (topic, 1)}
    for (t, p), row in partitions.items():
        labels = f'{{partition="{p}",topic="{t}"}}'
        assert float(row[2]) == samples[f"restate_bridge_consumer_lag{labels}"]
        assert float(row[3]) == samples[f"restate_bridge_committed_lag{labels}"] == 0
        assert float(row[4]) == samples[f"restate_bridge_oldest_unfinished_age_seconds{labels}"]
        assert float(row[5]) == samples[f"restate_bridge_committed_offset{labels}"]
        assert row[6] == "ok"

    [dead_row] = page.rows["dead"]
    assert dead_row[1] == "orders"
    assert dead_row[2].startswith(f"{topic}-")
    assert "not JSON" in dead_row[3]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"status-page-{broker.name}.png"
    shot.unlink(missing_ok=True)
    headless(url, tmp_path, f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


@pytest.mark.integration
async def test_markup_in_a_dead_letter_reason_or_a_route_name_renders_as_text(
    broker: Broker, bridges: BridgeFactory, tmp_path: Path
) -> None:
    topic, dlq = unique("xss"), unique("dlq")
    await create_topics(broker.bootstrap_servers, [topic, dlq])
    script = "<script>document.title=1</script>"
    name = '<img src=x onerror="document.title=2">'
    # a header value no HTTP header may carry (non-ASCII): the reason quotes it
    routes = route(
        name=name,
        topic=topic,
        target="object",
        service="Recorder",
        handler="record",
        key="{key}",
        headers=["x-note"],
    )
    note = (script + "\u00e9").encode()
    await produce(broker.bootstrap_servers, topic, [Message(b"k", b"1", [("x-note", note)])])
    bridge = bridges.start(routes, group_id=unique("g"), dead_letter_topic=dlq)

    async def dead() -> float:
        return sum(
            v
            for k, v in bridge.metrics().items()
            if k.startswith("restate_bridge_messages_total") and 'outcome="dead_lettered"' in k
        )

    assert await eventually(dead, 1.0) == 1.0
    dom = headless(f"http://127.0.0.1:{bridge.metrics_port}/", tmp_path, "--dump-dom").stdout
    page = Cells()
    page.feed(dom)
    [row] = page.rows["dead"]
    assert row[1] == name
    assert script in row[3]
    [route_row] = page.rows["routes"]
    assert route_row[0] == name
    # no element came from the data, and neither injected script ran
    assert "<img" not in dom
    assert dom.count("<script") == 1  # the page's own
    title = re.search(r"<title>(.*?)</title>", dom, re.DOTALL)
    assert title is not None
    assert title.group(1) == "restate-kafka-bridge"


def test_the_page_reads_only_controls_fields_that_status_json_has() -> None:
    controls = Controls()
    controls.set_paused("route", "r", True)
    controls.note(TopicPartition("t", 0), 4, "r", ReleaseSkip("why", "parking"))
    view = controls.view(
        topics=["t"],
        paused_partitions=[TopicPartition("t", 0)],
        blocked={TopicPartition("t", 1): (7, "r", "400", True)},
    )
    page = PAGE_FILE.read_text()
    script = page[page.index("const c = s.controls") : page.index("const num = ")]

    def used(name: str, fill: str) -> set[str]:
        start = script.index(f'fill("{fill}"')
        end = script.find("fill(", start + 1)
        segment = script[start : end if end > 0 else len(script)]
        return set(re.findall(rf"\b{name}\.(\w+)", segment))

    assert set(re.findall(r"\bc\.(\w+)", script)) <= set(view)
    assert used("t", "topics") <= set(view["topics"][0])
    assert used("b", "blocked") <= set(view["blocked"][0])
    assert used("r", "releases") <= set(view["releases"][0])
    assert {"topic", "partition", "offset", "route", "reason"} <= used("b", "blocked")
