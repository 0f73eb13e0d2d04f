"""docker-compose.yml and the Dockerfile, checked by structure (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.stack.apache_kafka import KAFKA_VERSION
from tests.stack.registry import APICURIO_VERSION

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def test_the_stack_has_every_service(services: dict[str, Any]) -> None:
    expected = {"kafka", "restate", "handlers", "register", "bridge", "prometheus", "grafana"}
    expected.add("schema-registry")
    assert set(services) >= expected


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name} has no image name"
        repo, _, tag = image.rpartition(":")
        assert repo, f"{name}: image {image!r} has no tag"
        assert "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: {image!r} is not pinned"
        assert re.search(r"\d", tag), f"{name}: {image!r} is not pinned"


def test_kafka_image_matches_the_tested_kafka_version(services: dict[str, Any]) -> None:
    for name in ("kafka", "topics"):
        assert services[name]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_registry_image_matches_the_tested_apicurio_version(services: dict[str, Any]) -> None:
    image = services["schema-registry"]["image"]
    assert image == f"apicurio/apicurio-registry-mem:{APICURIO_VERSION}"


def test_restate_image_matches_the_tested_restate_server(services: dict[str, Any]) -> None:
    package = json.loads((ROOT / "tests/stack/package.json").read_text())
    version = package["dependencies"]["@restatedev/restate-server"]
    assert services["restate"]["image"] == f"docker.restate.dev/restatedev/restate:{version}"


def test_services_start_in_order(services: dict[str, Any]) -> None:
    bridge = services["bridge"]["depends_on"]
    assert bridge["kafka"]["condition"] == "service_healthy"
    assert bridge["restate"]["condition"] == "service_healthy"
    assert bridge["register"]["condition"] == "service_completed_successfully"
    assert bridge["topics"]["condition"] == "service_completed_successfully"
    register = services["register"]["depends_on"]
    assert register["restate"]["condition"] == "service_healthy"
    assert register["handlers"]["condition"] == "service_healthy"
    for name in ("kafka", "restate", "handlers", "bridge", "prometheus"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_registration_points_restate_at_the_handlers(services: dict[str, Any]) -> None:
    command = " ".join(services["register"]["command"])
    assert "http://restate:9070/deployments" in command
    assert '"uri": "http://handlers:9080"' in command
    assert "9080" in services["handlers"]["expose"]


def _listen_port(services: dict[str, Any]) -> int:
    listen = services["bridge"]["environment"]["BRIDGE_METRICS_LISTEN"]
    return int(listen.rpartition(":")[2])


def test_bridge_is_configured_for_the_stack(services: dict[str, Any]) -> None:
    bridge = services["bridge"]
    env = bridge["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["RESTATE_URL"] == "http://restate:8080"
    assert env["BRIDGE_METRICS_LISTEN"].startswith("0.0.0.0:")
    port = _listen_port(services)
    assert f"{port}:{port}" in bridge["ports"]
    assert "/readyz" in " ".join(bridge["healthcheck"]["test"])
    assert f":{port}/readyz" in " ".join(bridge["healthcheck"]["test"])
    assert any(v.startswith("./routes.toml:") for v in bridge["volumes"])
    assert bridge["build"]["target"] == "bridge"


def test_prometheus_scrapes_the_bridge_metrics_listener(services: dict[str, Any]) -> None:
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in services["prometheus"]["volumes"])
    config_path = "/etc/prometheus/prometheus.yml"
    source = next(src for src, dst in mounts.items() if dst == config_path)
    assert f"--config.file={config_path}" in services["prometheus"]["command"]
    config = yaml.safe_load((ROOT / source).read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"bridge:{_listen_port(services)}" in targets
    assert any(t.startswith("restate:") for t in targets)
    for rule_file in config.get("rule_files", []):
        in_container = str(PurePosixPath(config_path).parent / rule_file)
        assert in_container in mounts.values(), f"rule file {in_container} is not mounted"


def test_mounted_files_exist_in_the_repository(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_grafana_provisioning_is_complete(services: dict[str, Any]) -> None:
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    datasources = list((provisioning / "datasources").glob("*.y*ml"))
    providers = list((provisioning / "dashboards").glob("*.y*ml"))
    assert datasources, "no datasource provisioning file"
    assert providers, "no dashboard provider file"
    source = yaml.safe_load(datasources[0].read_text())["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(providers[0].read_text())["providers"][0]
    dashboards_dir = provider["options"]["path"]
    host_dir = next(ROOT / src for dst, src in mounts.items() if dashboards_dir.startswith(dst))
    dashboards = list(host_dir.rglob("*.json"))
    assert dashboards, f"no dashboard JSON under {host_dir}"
    for path in dashboards:
        text = path.read_text()
        assert source.get("uid", "") in text or "${DS_PROMETHEUS}" in text, (
            f"{path.name} does not reference the provisioned datasource"
        )


def test_dockerfile_is_slim_non_root_and_checks_readiness() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    stages = text.split("\nFROM ")
    bridge_stage = stages[-1]
    assert bridge_stage.startswith("base AS bridge"), "the bridge must be the default target"
    assert re.search(r"^USER (?!root)\S+", bridge_stage, re.M)
    assert "HEALTHCHECK" in bridge_stage
    assert "/readyz" in bridge_stage
    assert 'ENTRYPOINT ["restate-bridge"]' in bridge_stage
