"""Apache Kafka, the reference broker: a single-node KRaft JVM (broker and controller in one).

The jars come from Maven Central through ``tests/stack/kafka/pom.xml``, the one place that records
the Kafka version; they are copied once into ``${XDG_CACHE_HOME:-~/.cache}/restate-kafka-bridge/``
and reused. Needs Java 17+ and ``mvn``; without them ``unavailable_reason()`` says why the
Apache Kafka half of the suite is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .maven import maven_fetch
from .probe import kafka_metadata_ready
from .procs import Process, StackError, free_port

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J2_CONFIG = KAFKA_DIR / "log4j2.properties"
MIN_JAVA = 17
JVM_FLAGS = [
    "-Xms256m",
    "-Xmx512m",
    # a test broker on a 2-core box: no parallel/G1 GC threads, no C2 compilation at start-up
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
]


def _pom_version(pom: Path = POM) -> str:
    """``<kafka.version>`` from the pom's ``<properties>``."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise RuntimeError(f"{pom} has no <properties><kafka.version>")
    return (node.text or "").strip()


KAFKA_VERSION = _pom_version()


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "restate-kafka-bridge" / f"kafka-{KAFKA_VERSION}"


def _java_major(java: str) -> int | None:
    """The major version that ``java -version`` reports, or None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _java_candidates() -> list[str]:
    """JAVA_HOMEs to try, in order: JAVA_HOME, ``java`` on PATH, then /usr/lib/jvm/*."""
    homes: list[str] = []
    if os.environ.get("JAVA_HOME"):
        homes.append(os.environ["JAVA_HOME"])
    on_path = shutil.which("java")
    if on_path is not None:
        homes.append(str(Path(on_path).resolve().parent.parent))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        homes += sorted(str(p.resolve()) for p in jvm.iterdir() if (p / "bin/java").exists())
    return list(dict.fromkeys(homes))


@cache
def java_home_for_kafka() -> str | None:
    """A JAVA_HOME with Java 17+, preferring 17 (Kafka's tested floor) over newer ones."""
    found: list[tuple[int, str]] = []
    for home in _java_candidates():
        major = _java_major(str(Path(home) / "bin/java"))
        if major is not None and major >= MIN_JAVA:
            if major == MIN_JAVA:
                return home
            found.append((major, home))
    return min(found)[1] if found else None


def unavailable_reason() -> str | None:
    """None if Apache Kafka can run here, else one sentence saying why its half is skipped."""
    if java_home_for_kafka() is None:
        return (
            f"Apache Kafka {KAFKA_VERSION} is skipped: no Java {MIN_JAVA}+ found "
            "(JAVA_HOME, java on PATH, /usr/lib/jvm)."
        )
    if shutil.which("mvn") is None:
        return f"Apache Kafka {KAFKA_VERSION} is skipped: mvn is not on PATH to fetch its jars."
    return None


def ensure_kafka_libs() -> Path:
    """The broker's classpath folder, filled once by ``mvn dependency:copy-dependencies``."""
    jar = f"kafka_2.13-{KAFKA_VERSION}.jar"
    return maven_fetch(
        POM,
        "dependency:copy-dependencies",
        "outputDirectory",
        _cache_root() / "libs",
        marker_text=f"{KAFKA_VERSION}\n",
        java_home=java_home_for_kafka(),
        complete=lambda folder: None if (folder / jar).exists() else f"no {jar}",
    )


def _cluster_id() -> str:
    """A random cluster id as ``kafka-storage random-uuid`` makes: unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


async def _describe_probe_group(bootstrap_servers: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
    try:
        await admin.start()
        (response,) = await admin.describe_consumer_groups(["restate-kafka-bridge-stack-probe"])
        return all(group[0] == 0 for group in response.groups)  # error_code 0: not loading
    finally:
        await admin.close()


def group_coordinator_ready(bootstrap_servers: str) -> bool:
    """True once the group coordinator answers without COORDINATOR_LOAD_IN_PROGRESS.

    Kafka creates ``__consumer_offsets`` on the first FindCoordinator; until it is loaded, every
    JoinGroup fails and librdkafka (Restate's subscriptions) backs off ~3 s. Done once at start-up.
    """
    return asyncio.run(asyncio.wait_for(_describe_probe_group(bootstrap_servers), 5))


@dataclass(frozen=True)
class Listener:
    """A listener besides PLAINTEXT: ``name`` (upper case), its security protocol, and its
    ``listener.name.<name>.*`` settings (keys without that prefix)."""

    name: str
    protocol: str
    settings: Mapping[str, str] = field(default_factory=dict)


class ApacheKafkaBroker:
    """Apache Kafka in KRaft combined mode on free ports; log dir and log file in ``workdir``.

    The PLAINTEXT listener (``bootstrap_servers``) is always there: readiness, admin and setup
    use it. ``listeners`` adds more on their own free ports (:meth:`address`); ``scram`` are
    ``kafka-storage format --add-scram`` credentials, e.g. ``SCRAM-SHA-256=[name=a,password=b]``.
    """

    name = "apache-kafka"

    def __init__(
        self,
        workdir: Path,
        *,
        listeners: Sequence[Listener] = (),
        scram: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
        system_properties: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.settings = dict(settings or {})
        """Broker-level settings besides the defaults (after them: they win)."""
        self.system_properties = dict(system_properties or {})
        """``-Dname=value`` flags of the broker's JVM."""
        self.port = free_port()
        self.controller_port = free_port()
        self.listeners = tuple(listeners)
        self.listener_ports = {listener.name: free_port() for listener in self.listeners}
        self.scram = tuple(scram)
        self.process: Process | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def address(self, listener: str) -> str:
        """``host:port`` of the extra listener called ``listener``."""
        return f"127.0.0.1:{self.listener_ports[listener]}"

    def _properties(self) -> str:
        controller = f"127.0.0.1:{self.controller_port}"
        endpoints = "".join(
            f",{name}://127.0.0.1:{port}" for name, port in self.listener_ports.items()
        )
        protocols = "".join(f",{listener.name}:{listener.protocol}" for listener in self.listeners)
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://{controller}{endpoints}",
            "advertised.listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://{controller}{endpoints}"
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": (
                f"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{protocols}"
            ),
            "log.dirs": str(self.workdir / "kafka-logs"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            # small machine: few threads, small segments, no background work worth waiting for
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "log.segment.bytes": str(16 * 1024 * 1024),
            "log.index.size.max.bytes": str(1024 * 1024),
            "delete.topic.enable": "true",
        }
        settings.update(self.settings)
        for listener in self.listeners:
            prefix = f"listener.name.{listener.name.lower()}."
            settings.update({prefix + key: value for key, value in listener.settings.items()})
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _properties_flags(self) -> list[str]:
        return [f"-D{name}={value}" for name, value in self.system_properties.items()]

    def _java(self) -> tuple[str, dict[str, str]]:
        java_home = java_home_for_kafka()
        if java_home is None:
            raise StackError(unavailable_reason() or "no Java 17+ for Apache Kafka")
        return str(Path(java_home) / "bin/java"), {"JAVA_HOME": java_home}

    def start(self, timeout: float = 90.0) -> None:
        libs = ensure_kafka_libs()
        java, env = self._java()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        config.write_text(self._properties())
        classpath = ["-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}"]
        log_path = self.workdir / "kafka.log"
        with log_path.open("ab") as log:
            formatted = subprocess.run(
                [
                    java,
                    *JVM_FLAGS,
                    *classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    # one argument: an id may start with "-", which argparse takes for an option
                    f"--cluster-id={_cluster_id()}",
                    "--config",
                    str(config),
                    "--standalone",
                    *(arg for credential in self.scram for arg in ("--add-scram", credential)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
                timeout=timeout,
            )
        if formatted.returncode != 0:
            raise StackError(
                f"kafka-storage format failed ({formatted.returncode}); log {log_path}"
            )
        self.process = Process(
            "apache-kafka",
            [java, *JVM_FLAGS, *self._properties_flags(), *classpath, "kafka.Kafka", str(config)],
            log_path,
            env=env,
        )
        self.process.start()
        self.process.wait_until(
            lambda: kafka_metadata_ready(self.bootstrap_servers), timeout, "answering metadata"
        )
        self.process.wait_until(
            lambda: group_coordinator_ready(self.bootstrap_servers), timeout, "coordinating groups"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)
