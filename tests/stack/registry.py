"""Apicurio Registry, a real schema registry serving the Confluent API at ``/apis/ccompat/v7``.

The version is recorded once, in ``tests/stack/registry/pom.xml``; the first run unpacks its
distribution (``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``) with
``mvn dependency:unpack`` into ``${XDG_CACHE_HOME:-~/.cache}/restate-kafka-bridge/``, later runs
reuse it. It runs as ``java -jar *-runner.jar`` with Java 17 and its in-memory storage kind (H2),
kept in a file of its work directory so that a test can stop and restart it without losing the
schemas (and ids) registered before.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .apache_kafka import JVM_FLAGS, java_home_for_kafka
from .maven import maven_fetch
from .procs import Process, StackError, free_port

POM = Path(__file__).resolve().parent / "registry" / "pom.xml"
CCOMPAT = "/apis/ccompat/v7"


def _pom_version(pom: Path = POM) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:apicurio.version", ns)
    if node is None or not (node.text or "").strip():
        raise RuntimeError(f"{pom} has no <properties><apicurio.version>")
    return (node.text or "").strip()


APICURIO_VERSION = _pom_version()


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "restate-kafka-bridge" / f"apicurio-registry-{APICURIO_VERSION}"


def unavailable_reason() -> str | None:
    """None if the registry can run here, else one sentence saying why its tests are skipped."""
    if java_home_for_kafka() is None:
        return f"Apicurio Registry {APICURIO_VERSION} is skipped: no Java 17+ found."
    if shutil.which("mvn") is None:
        return f"Apicurio Registry {APICURIO_VERSION} is skipped: mvn is not on PATH."
    return None


def ensure_registry() -> Path:
    """The unpacked distribution's ``*-runner.jar``, unpacked once by ``mvn dependency:unpack``."""
    jar = f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
    home = maven_fetch(
        POM,
        "dependency:unpack",
        "unpack.dir",
        _cache_root() / "app",
        marker_text=f"{APICURIO_VERSION}\n",
        java_home=java_home_for_kafka(),
        complete=lambda folder: None if (folder / jar).exists() else f"no {jar}",
    )
    return home / jar


def _ready(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return resp.status == 200


class ApicurioRegistry:
    """One registry on a free port; its H2 database and log in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        """The Confluent API's base, as ``[schema_registry] url`` takes it."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT}"

    def start(self, timeout: float = 90.0) -> None:
        jar = ensure_registry()
        java_home = java_home_for_kafka()
        if java_home is None:
            raise StackError(unavailable_reason() or "no Java 17+")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            "apicurio-registry",
            [
                str(Path(java_home) / "bin/java"),
                *JVM_FLAGS,
                "-Dquarkus.http.host=127.0.0.1",
                f"-Dquarkus.http.port={self.port}",
                "-jar",
                str(jar),
            ],
            self.workdir / "registry.log",
            env={
                "JAVA_HOME": java_home,
                # the in-memory storage kind, its H2 database in a file: it survives a restart
                "REGISTRY_DATASOURCE_URL": f"jdbc:h2:file:{self.workdir / 'db' / 'registry'}",
            },
            cwd=self.workdir,
        )
        self.process.start()
        health = f"http://127.0.0.1:{self.port}/health/ready"
        self.process.wait_until(lambda: _ready(health), timeout, "ready on /health/ready")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)

    def register(
        self,
        subject: str,
        schema: str,
        schema_type: str = "AVRO",
        references: list[dict[str, Any]] | None = None,
    ) -> int:
        """Register ``schema`` under ``subject`` as a Confluent serializer would; its id."""
        body: dict[str, Any] = {"schema": schema, "schemaType": schema_type}
        if references:
            body["references"] = references
        request = urllib.request.Request(
            f"{self.url}/subjects/{subject}/versions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return int(json.loads(resp.read())["id"])
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"registering {subject}: {exc.code} {exc.read()!r}") from None
