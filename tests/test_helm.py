"""The Helm chart in ``deploy/helm/restate-kafka-bridge``: it lints, renders valid manifests, and
what it renders is what a platform team needs.

Helm is built from the Go module proxy once (``tests/stack/helm.py``). For the default values
and for ``ci/full-values.yaml`` (every feature on): ``helm lint``; every core resource validates
with kubernetes-validate against the Kubernetes version ``Chart.yaml`` declares; the custom
resources (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) are checked by
hand; the routing file the ConfigMap carries passes ``restate-bridge check`` (with the mounted
secrets as real files); the rendered alert rules are ``dashboards/prometheus/alerts.yml`` and pass
``promtool check rules``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import trustme
import yaml

from bridge.cli import main
from bridge.config import load_config
from tests.stack import helm as helm_stack

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "restate-kafka-bridge"
FULL = CHART / "ci" / "full-values.yaml"
OAUTH = CHART / "ci" / "oauth-values.yaml"
ALERTS = REPO / "dashboards" / "prometheus" / "alerts.yml"
DOCS = REPO / "docs" / "deploying.md"
VALUES = {"default": None, "full": FULL, "oauth": OAUTH, "readme": DOCS}
CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2"}
ROUTES_PATH = "/etc/restate-bridge/routes.toml"
# the routing-file options that name a mounted secret file, and the values key of that secret
FILE_OPTIONS = {
    ("kafka", "sasl_password_file"): "kafkaSasl",
    ("kafka", "sasl_oauth_client_secret_file"): "kafkaOAuth",
    ("kafka", "ssl_cafile"): "kafkaTls",
    ("kafka", "ssl_certfile"): "kafkaTls",
    ("kafka", "ssl_keyfile"): "kafkaTls",
    ("restate", "token_file"): "restateToken",
    ("metrics", "token_file"): "metricsToken",
}


def values_file(name: str, tmp: Path) -> Path | None:
    """The values of ``name``; for "readme", the docs' ``# my-values.yaml`` example."""
    path = VALUES[name]
    if path != DOCS:
        return path
    section = DOCS.read_text().split("## Deploying on Kubernetes", 1)[1]
    (block,) = re.findall(r"```yaml\n(# my-values\.yaml\n.*?)```", section, re.S)
    written = tmp / "readme-values.yaml"
    written.write_text(block)
    return written


def _chart() -> dict[str, Any]:
    chart: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return chart


def kube_version() -> str:
    """The lowest version ``kubeVersion: ">=1.33.0-0"`` admits: what we validate against."""
    match = re.fullmatch(r">=\s*(\d+\.\d+)\.\d+(?:-0)?", _chart()["kubeVersion"])
    assert match, f"Chart.yaml kubeVersion {_chart()['kubeVersion']!r} is not '>=X.Y.Z-0'"
    return match.group(1) + ".0"


@pytest.fixture(scope="module")
def helm() -> Path:
    """The helm binary; skips without Go (fails with CI=true, where it is mandatory)."""
    in_ci = os.environ.get("CI") == "true"
    reason = helm_stack.unavailable_reason()
    if reason is not None:
        if in_ci:
            pytest.fail(f"Helm is mandatory in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        return helm_stack.ensure_helm()
    except RuntimeError as exc:
        if in_ci:
            pytest.fail(f"Helm is mandatory in CI: {exc}", pytrace=False)
        pytest.skip(f"Helm {helm_stack.HELM_VERSION} could not be built: {exc}")


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )


def render(helm: Path, values: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    argv = ["template", "rel", str(CHART), "--kube-version", kube_version()]
    if values is not None:
        argv += ["-f", str(values)]
    for item in sets:
        argv += ["--set", item]
    done = run_helm(helm, *argv)
    assert done.returncode == 0, f"helm {' '.join(argv)}:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_error(helm: Path, values: Path | None, *sets: str) -> str:
    argv = ["template", "rel", str(CHART), "--kube-version", kube_version()]
    if values is not None:
        argv += ["-f", str(values)]
    for item in sets:
        argv += ["--set", item]
    done = run_helm(helm, *argv)
    assert done.returncode != 0, f"helm {' '.join(argv)} rendered, expected a refusal"
    return done.stderr


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} rendered"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (bridge,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = bridge
    return result


def routes_of(docs: list[dict[str, Any]]) -> str:
    text: str = one(docs, "ConfigMap")["data"]["routes.toml"]
    return text


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(
    request: pytest.FixtureRequest, helm: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    return render(helm, values_file(request.param, tmp_path_factory.mktemp("values")))


# -- helm lint, and Kubernetes' own schemas -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUES))
def test_chart_lints(helm: Path, name: str, tmp_path: Path) -> None:
    argv = ["lint", str(CHART), "--strict", "--kube-version", kube_version()]
    values = values_file(name, tmp_path)
    if values is not None:
        argv += ["-f", str(values)]
    done = run_helm(helm, *argv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_kubernetes_validate_has_the_declared_version() -> None:
    versions = kubernetes_validate.utils.all_versions()
    assert kube_version() in versions, f"kubernetes-validate ships {versions[0]}..{versions[-1]}"


def test_core_resources_validate(rendered: list[dict[str, Any]]) -> None:
    core = [doc for doc in rendered if doc["apiVersion"] in CORE_GROUPS]
    kinds = {doc["kind"] for doc in core}
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount", "PodDisruptionBudget"} <= kinds
    for doc in core:
        try:
            kubernetes_validate.validate(doc, kube_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}", pytrace=False)
    others = {doc["kind"] for doc in rendered if doc["apiVersion"] not in CORE_GROUPS}
    assert others <= {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}


# -- the Deployment -----------------------------------------------------------------------------


def test_pod_is_hardened_and_probed(rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    bridge = container(rendered)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    ctx = bridge["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(bridge["resources"]["requests"])
    assert {"cpu", "memory"} <= set(bridge["resources"]["limits"])
    # /tmp is the one writable place (protobuf schemas are compiled there)
    assert {"name": "tmp", "mountPath": "/tmp"} in bridge["volumeMounts"]

    assert bridge["command"] + bridge["args"] == [
        "python",
        "-m",
        "bridge",
        "run",
        "--routes",
        ROUTES_PATH,
    ]
    env = {item["name"]: item.get("value") for item in bridge["env"]}
    (port,) = bridge["ports"]
    assert env["BRIDGE_METRICS_LISTEN"] == f"0.0.0.0:{port['containerPort']}"
    assert port["name"] == "metrics"
    assert bridge["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    readiness = bridge["readinessProbe"]
    if "httpGet" in readiness:
        assert readiness["httpGet"] == {"path": "/readyz", "port": "metrics"}
    else:  # a listener token: /readyz wants it, so an exec probe sends it
        script = readiness["exec"]["command"][2]
        assert f"http://127.0.0.1:{port['containerPort']}/readyz" in script
        assert "Authorization" in script
        assert "/metrics-token/token" in script

    service = one(rendered, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= pod_labels(rendered).items()
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(rendered).items()


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_grace_period_outlasts_the_drain(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    routes = tmp_path / "routes.toml"
    routes.write_text(routes_of(rendered))
    drain = tomllib.loads(routes.read_text()).get("delivery", {}).get("drain_timeout", "30s")
    from bridge.core.durations import parse_duration

    seconds = parse_duration(drain).total_seconds()
    assert pod["terminationGracePeriodSeconds"] >= seconds + 10, (drain, pod)


def test_routing_file_is_mounted_from_the_configmap(rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (mount,) = [m for m in container(rendered)["volumeMounts"] if m["mountPath"] == ROUTES_PATH]
    config_map = one(rendered, "ConfigMap")
    assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert mount["subPath"] == "routes.toml"
    assert mount["readOnly"] is True
    assert "[[routes]]" in config_map["data"]["routes.toml"]


@pytest.mark.parametrize("values_path", [FULL, OAUTH], ids=["full", "oauth"])
def test_secrets_are_files_the_routing_file_names(helm: Path, values_path: Path) -> None:
    docs = render(helm, values_path)
    values = yaml.safe_load(values_path.read_text())
    routes = tomllib.loads(routes_of(docs))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = container(docs)["volumeMounts"]
    named = [(t, o, s) for (t, o), s in FILE_OPTIONS.items() if o in routes.get(t, {})]
    assert {s for _, _, s in named} == set(values["secrets"])  # every secret given is named
    for table, option, secret in named:
        path = Path(routes[table][option])
        (mount,) = [m for m in mounts if m["mountPath"] == str(path.parent)]
        assert mount["readOnly"] is True
        volume = volumes[mount["name"]]["secret"]
        assert volume["secretName"] == values["secrets"][secret]["secretName"], option
        assert path.name in {item["path"] for item in volume["items"]}, (option, volume)
        assert volume["defaultMode"] == 0o440
    assert routes["kafka"]["security_protocol"] == "SASL_SSL"


@pytest.mark.parametrize("name", sorted(VALUES))
def test_rendered_routing_file_passes_check(
    helm: Path, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the pod would run: the ConfigMap's file, the pod's env, the secrets as files."""
    docs = render(helm, values_file(name, tmp_path))
    text = routes_of(docs)
    ca = trustme.CA()
    leaf = ca.issue_cert("restate-bridge")
    for (table, option), _secret in FILE_OPTIONS.items():
        mounted = tomllib.loads(text).get(table, {}).get(option)
        if mounted is None:
            continue
        local = tmp_path / "mounts" / mounted.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        if option == "ssl_cafile":
            ca.cert_pem.write_to_path(str(local))
        elif option == "ssl_certfile":
            leaf.cert_chain_pems[0].write_to_path(str(local))
        elif option == "ssl_keyfile":
            leaf.private_key_pem.write_to_path(str(local))
        else:
            local.write_text(f"secret-{option}\n")
        text = text.replace(f'"{mounted}"', f'"{local}"')
    routes = tmp_path / "routes.toml"
    routes.write_text(text)
    for variable in ("RESTATE_URL", "KAFKA_BOOTSTRAP_SERVERS", "RESTATE_AUTH_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    for item in container(docs)["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    assert main(["check", str(routes)]) == 0
    assert load_config(routes, dict(os.environ)).metrics.listen == "0.0.0.0:9464"


def test_routing_file_change_rolls_the_pods(helm: Path) -> None:
    before = render(helm)
    after = render(helm, None, "routes=" + routes_of(before).replace("orders", "purchases"))
    annotation = "checksum/routes"

    def checksum(docs: list[dict[str, Any]]) -> str:
        template = one(docs, "Deployment")["spec"]["template"]
        annotations = template["metadata"].get("annotations") or {}
        assert annotation in annotations, "no checksum: a changed routing file would not roll"
        value: str = annotations[annotation]
        return value

    assert checksum(before) != checksum(after)
    assert checksum(before) == checksum(render(helm))
    assert re.fullmatch(r"[0-9a-f]{64}", checksum(before))


def test_existing_configmap(helm: Path) -> None:
    docs = render(helm, None, "existingConfigMap=my-routes")
    assert not [doc for doc in docs if doc["kind"] == "ConfigMap"]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "my-routes", "items": [{"key": "routes.toml", "path": "routes.toml"}]} in [
        v.get("configMap") for v in volumes
    ]


@pytest.mark.parametrize(
    ("values", "sets", "message"),
    [
        (None, ["drainTimeoutSeconds=20"], "(30s) is longer than drainTimeoutSeconds"),
        (None, ["secrets.restateToken.secretName=tok"], "[restate] token_file ="),
        (None, ["autoscaling.keda.enabled=true", "autoscaling.hpa.enabled=true"], "pick one"),
        (None, ["routes=[kafka"], "routes is not valid TOML"),
        (FULL, ["secrets.metricsToken.secretName="], "names a file nothing mounts"),
        (OAUTH, ["secrets.kafkaOAuth.secretName="], "names a file nothing mounts"),
        (FULL, ["secrets.kafkaOAuth.secretName=c"], "sasl_oauth_client_secret_file ="),
        (FULL, ["secrets.kafkaTls.certKey="], 'ssl_certfile = "/etc/restate-bridge/kafka-tls'),
        (FULL, ["autoscaling.keda.maxReplicaCount=13"], "is more than partitionCount (12)"),
        (FULL, ["autoscaling.keda.partitionCount=0"], "partitionCount"),
    ],
)
def test_chart_refuses_inconsistent_values(
    helm: Path, values: Path | None, sets: list[str], message: str
) -> None:
    assert message in render_error(helm, values, *sets)


# -- autoscaling, Prometheus Operator -----------------------------------------------------------


def test_default_values_scale_nothing_and_watch_nothing(helm: Path) -> None:
    docs = render(helm)
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert {doc["apiVersion"] for doc in docs} <= CORE_GROUPS


def test_hpa(helm: Path) -> None:
    docs = render(helm, None, "autoscaling.hpa.enabled=true")
    hpa = one(docs, "HorizontalPodAutoscaler")
    kubernetes_validate.validate(hpa, kube_version(), strict=True)
    assert "replicas" not in one(docs, "Deployment")["spec"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_keda_scales_on_lag_up_to_the_partitions(helm: Path) -> None:
    docs = render(helm, FULL)
    values = yaml.safe_load(FULL.read_text())["autoscaling"]["keda"]
    deployment = one(docs, "Deployment")
    assert "replicas" not in deployment["spec"]
    scaled = one(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert spec["minReplicaCount"] == values["minReplicaCount"]
    assert spec["maxReplicaCount"] == values["maxReplicaCount"] <= values["partitionCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert all(isinstance(value, str) for value in meta.values()), meta  # KEDA wants strings
    assert meta["bootstrapServers"] == values["bootstrapServers"]
    assert meta["consumerGroup"] == tomllib.loads(routes_of(docs))["kafka"]["group_id"]
    assert meta["topic"] == "orders"
    assert meta["lagThreshold"] == "500"
    assert meta["sasl"] == "scram_sha512"
    assert meta["tls"] == "enable"
    auth = one(docs, "TriggerAuthentication")
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": ("kafka-bridge-user", "username"),
        "password": ("kafka-bridge-user", "password"),
        "ca": ("kafka-bridge-tls", "ca.crt"),
        "cert": ("kafka-bridge-tls", "tls.crt"),
        "key": ("kafka-bridge-tls", "tls.key"),
    }
    # without maxReplicaCount, the partition count is the ceiling
    docs = render(helm, FULL, "autoscaling.keda.maxReplicaCount=0")
    assert one(docs, "ScaledObject")["spec"]["maxReplicaCount"] == values["partitionCount"]


def test_service_monitor_scrapes_the_job_the_rules_watch(helm: Path) -> None:
    docs = render(helm, FULL)
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"  # open even with a listener token
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "job"
    jobs = set(re.findall(r'job="([^"]+)"', ALERTS.read_text()))
    assert jobs == {relabel["replacement"]}


def test_prometheus_rule_is_the_alert_rules_file(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, FULL)
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    rendered = tmp_path / "rules.yml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is mandatory in CI (apt-get install prometheus)", pytrace=False)
        pytest.skip("promtool not installed (apt-get install prometheus)")
    done = subprocess.run(
        [promtool, "check", "rules", str(rendered)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in rule['spec']['groups'])} rules found" in (
        done.stdout
    )


def test_chart_reads_the_one_alert_rules_file() -> None:
    """The chart's rules file is a symlink to dashboards/prometheus/alerts.yml (which compose's
    Prometheus mounts): one file, so the two can never differ. ``helm package`` copies it in."""
    link = CHART / "files" / "alerts.yml"
    assert link.is_symlink(), f"{link} must stay a symlink, not a copy"
    assert link.resolve() == ALERTS.resolve()
    digest = hashlib.sha256(link.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(ALERTS.read_bytes()).hexdigest()
