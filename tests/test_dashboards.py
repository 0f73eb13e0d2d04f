"""The Grafana dashboard and the Prometheus config and alert rules under ``dashboards/``.

promtool checks the rules (and runs their unit tests, ``alerts_test.yml``) and the config. The
integration test runs a real Prometheus against real bridges and asks it every query of every
dashboard panel: each must return data, and every metric name the dashboard uses must be one the
bridge exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import missing_service, recorder, route, unique
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.procs import Process, free_port, port_open

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "dashboards" / "prometheus"
GRAFANA_DIR = REPO / "dashboards" / "grafana"
DASHBOARD = GRAFANA_DIR / "restate-bridge.json"
ALERTS = PROMETHEUS_DIR / "alerts.yml"

# Grafana's own variables, as a 1s-scrape Prometheus would get them
GRAFANA_VARIABLES = {"__rate_interval": "10s", "__interval": "5s", "__range": "1m"}
METRIC_NAME = re.compile(r"\b(?:restate_bridge|process)_[a-z0-9_]+\b")


def tool(name: str) -> str:
    """Path of a Prometheus binary (Debian's ``prometheus`` package); skip or fail without it."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is mandatory in CI (apt-get install prometheus)", pytrace=False)
        pytest.skip(f"{name} not installed (apt-get install prometheus)")
    return path


def run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{output}"
    return output


def test_alert_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    run([promtool, "check", "rules", str(ALERTS)])
    run([promtool, "test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml")])


def test_prometheus_config_is_valid() -> None:
    # rule_files are relative to the config, so the repository layout checks like the container
    run([tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["restate-bridge"]["static_configs"][0]["targets"] == ["bridge:9464"]
    assert "restate" in jobs


# -- the dashboard ------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every target of every panel, rows' nested panels included."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((panel.get("title", f"panel {panel.get('id')}"), target["expr"]))
            walk(panel.get("panels", []))

    walk(board["panels"])
    return found


def substitute(expr: str, board: dict[str, Any]) -> str:
    """The query Grafana would send: its own variables and the dashboard's template variables."""
    values = dict(GRAFANA_VARIABLES)
    for var in board.get("templating", {}).get("list", []):
        current = var.get("current", {}).get("value")
        if var.get("includeAll") and current in ("$__all", ["$__all"], None):
            values[var["name"]] = var.get("allValue") or ".*"
        else:
            values[var["name"]] = current[0] if isinstance(current, list) else current
    for name in sorted(values, key=len, reverse=True):
        for form in (f"${{{name}}}", f"[[{name}]]", f"${name}"):
            expr = expr.replace(form, values[name])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def test_dashboard_uses_the_provisioned_datasource() -> None:
    board = dashboard()
    provisioned = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {ds["uid"] for ds in provisioned["datasources"]}
    queries = panel_queries(board)
    assert len(queries) >= 15
    used: list[tuple[str, Any]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            if panel.get("type") != "row":
                used.append((panel["title"], panel.get("datasource")))
                used.extend((panel["title"], t.get("datasource")) for t in panel["targets"])
            walk(panel.get("panels", []))

    walk(board["panels"])
    for title, ds in used:
        uid = ds.get("uid") if isinstance(ds, dict) else None
        assert uid in uids, f"panel {title!r}: datasource {ds}, provisioned uids {uids}"
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_stuck_partitions_have_panels_and_alerts() -> None:
    """Head-of-line blocking and the committed lag are on the dashboard and alerted on."""
    exprs = [expr for _, expr in panel_queries(dashboard())]
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    for metric, alert in (
        ("restate_bridge_committed_lag", "CommittedLagGrowing"),
        ("restate_bridge_oldest_unfinished_age_seconds", "HeadOfLineBlocking"),
    ):
        assert any(metric in expr for expr in exprs), f"no panel shows {metric}"
        assert metric in rules[alert]["expr"], rules[alert]
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    for alert in rules:  # every rule has a firing and a non-firing case
        cases = [c for t in tests for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in cases), f"{alert}: no firing case"
        assert any(not c["exp_alerts"] for c in cases), f"{alert}: no non-firing case"


# -- a live Prometheus --------------------------------------------------------------------------


class Prometheus:
    """A Prometheus server scraping ``targets`` every second, with the repository's alert rules."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "restate-bridge", "static_configs": [{"targets": targets}]}
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = Process(
            "prometheus",
            [
                tool("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
        )

    def start(self) -> None:
        self.process.start()
        self.process.wait_until(lambda: port_open(self.port), 60, "listening")
        self.process.wait_until(lambda: self._get("/-/ready") is not None, 60, "ready")

    def stop(self) -> None:
        self.process.stop()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if path.startswith("/api/") else body

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", f"{expr}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")

    def rules(self) -> list[dict[str, Any]]:
        groups = self._get("/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


def wait_for(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.3)


def exported_names(*procs: BridgeProcess) -> set[str]:
    return {sample.partition("{")[0] for proc in procs for sample in proc.metrics()}


@pytest.mark.integration
async def test_every_dashboard_panel_query_returns_data(
    broker: Broker, bridges: BridgeFactory, tmp_path: Path
) -> None:
    tool("prometheus")  # skip (or fail in CI) before starting anything
    topic, dlq, stuck = unique("dash"), unique("dash-dlq"), unique("dash-stuck")
    answers = unique("dash-answers")
    await create_topics(broker.bootstrap_servers, [topic, dlq, stuck, answers])
    order, missing = [("kind", b"order")], [("kind", b"missing")]
    greet, late = [("kind", b"greet")], [("kind", b"late")]
    await produce(
        broker.bootstrap_servers,
        topic,
        [Message(b"k", json.dumps({"id": f"d{i}"}).encode(), order) for i in range(20)]
        + [Message(b"poison", b"not json", order)]  # bad key template: dead-lettered
        + [Message(b"missing", b"{}", missing)]  # 404, retried for 3s, dead-lettered
        + [Message(b"g", b'"Ada"', greet)]  # replied
        # a workflow nobody approves: no result within 1s, dead-lettered
        + [Message(b"w", json.dumps({"id": unique("wf"), "email": "e@x"}).encode(), late)],
    )
    await produce(broker.bootstrap_servers, stuck, [Message(b"poison", b"not json")])
    # one bridge with a dead-letter topic: accepted, dead-lettered, 404 errors and retries
    main = bridges.start(
        recorder(topic, name="orders", key="{value.id}", match={"header.kind": "order"})
        + missing_service(topic, "missing")
        + route(
            name="answer",
            topic=topic,
            target="service",
            service="Greeter",
            handler="greet",
            match={"header.kind": "greet"},
            reply_topic=answers,
        )
        + route(
            name="late",
            topic=topic,
            target="workflow",
            service="Signup",
            handler="run",
            key="{value.id}",
            body="{value.email}",
            match={"header.kind": "late"},
            reply_topic=answers,
            reply_timeout="1s",
        ),
        group_id=unique("g"),
        dead_letter_topic=dlq,
        delivery='unknown_target_grace = "3s"',
    )
    # one without: its partition blocks at the poison record
    blocked = bridges.start(
        recorder(stuck, name="stuck", key="{value.id}"), group_id=unique("g"), name="blocked"
    )

    stuck_labels = f'{{partition="0",topic="{stuck}"}}'

    def done() -> bool:
        s, b = main.metrics(), blocked.metrics()
        accepted = f'{{outcome="accepted",route="orders",topic="{topic}"}}'
        dead = [k for k in s if 'outcome="dead_lettered"' in k]
        return (
            s.get(f"restate_bridge_messages_total{accepted}") == 20
            and sum(s[k] for k in dead) == 3
            and s.get('restate_bridge_replies_total{route="answer",status="ok"}') == 1
            and any(k.startswith("restate_bridge_reply_errors_total") for k in s)
            and any(k.startswith("restate_bridge_committed_offset") for k in s)
            and any(k.startswith("restate_bridge_consumer_lag") for k in s)
            and any(k.startswith("restate_bridge_committed_lag") for k in s)
            and any(k.startswith("restate_bridge_oldest_unfinished_age_seconds") for k in s)
            and b.get(f"restate_bridge_oldest_unfinished_age_seconds{stuck_labels}", 0) > 0
            and b.get(f'restate_bridge_partition_blocked{{partition="0",topic="{stuck}"}}') == 1
        )

    prometheus = Prometheus(
        tmp_path / "prometheus",
        [f"127.0.0.1:{main.metrics_port}", f"127.0.0.1:{blocked.metrics_port}"],
    )
    prometheus.start()
    try:
        wait_for(done, 90, "accepted, dead-lettered and blocked records in the bridges' metrics")
        complete = time.time()
        # both targets scraped at least three times after the bridges reached their final state,
        # often enough that the panels' 10s rate windows hold several samples of every series
        up = 'up{job="restate-bridge"}'
        wait_for(
            lambda: (
                prometheus.scalar(f"sum({up})") == 2
                and prometheus.scalar(f"min(timestamp({up}))") > complete + 3
                and prometheus.scalar(f"min(count_over_time({up}[10s]))") >= 5
            ),
            60,
            "Prometheus to scrape both bridges",
        )
        board = dashboard()
        queries = panel_queries(board)
        exported = exported_names(main, blocked)
        unknown = []
        for title, expr in queries:
            for name in METRIC_NAME.findall(expr):
                if name not in exported:
                    unknown.append(f"panel {title!r}: {name} (in {expr})")
        assert not unknown, "dashboard metrics the bridge does not export:\n" + "\n".join(unknown)

        empty = []
        for title, expr in queries:
            if not prometheus.query(substitute(expr, board)):
                samples = {
                    name: [r["value"][1] for r in prometheus.query(f"count_over_time({name}[1m])")]
                    for name in METRIC_NAME.findall(expr)
                }
                empty.append(f"panel {title!r}: {expr}\n  samples in the last minute: {samples}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        bad_rules = [
            f"{rule['name']}: {rule.get('lastError')}"
            for rule in prometheus.rules()
            if rule.get("health") != "ok"
        ]
        assert not bad_rules, "alert rules failing to evaluate:\n" + "\n".join(bad_rules)
    finally:
        prometheus.stop()
