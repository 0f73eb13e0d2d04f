"""A real Restate server on free ports, with its own base dir, and its admin API."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .install import ensure_restate_server
from .procs import Process, free_port


@dataclass(frozen=True)
class KafkaCluster:
    """A Kafka cluster that Restate's own subscriptions may read from (the benchmark's peer)."""

    name: str
    bootstrap_servers: str


class RestateServer:
    """``restate-server`` started directly (not through the node wrapper) so it can be signalled."""

    def __init__(
        self, workdir: Path, *, kafka: KafkaCluster | None = None, options: str = ""
    ) -> None:
        self.workdir = workdir
        self.kafka = kafka
        self.options = options
        """TOML lines placed at the top of ``restate.toml``, before any table: server-wide
        options such as ``experimental-enable-vqueues = true``."""
        self.ingress_port = free_port()
        self.admin_port = free_port()
        self.node_port = free_port()
        self.pgsql_port = free_port()
        self.process: Process | None = None

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def _config(self) -> str:
        lines = [
            'cluster-name = "bridge-tests"',
            f'bind-address = "127.0.0.1:{self.node_port}"',
            f'advertised-address = "http://127.0.0.1:{self.node_port}"',
            self.options,
            "",
            "[ingress]",
            f'bind-address = "127.0.0.1:{self.ingress_port}"',
            "",
        ]
        if self.kafka is not None:
            lines += [
                "[[ingress.kafka-clusters]]",
                f'name = "{self.kafka.name}"',
                f'brokers = ["{self.kafka.bootstrap_servers}"]',
                "",
            ]
        lines += [
            "[admin]",
            f'bind-address = "127.0.0.1:{self.admin_port}"',
            "",
            "[admin.query-engine]",
            f'pgsql-bind-address = "127.0.0.1:{self.pgsql_port}"',
            "",
        ]
        return "\n".join(lines)

    def start(self, timeout: float = 60.0) -> None:
        binary = ensure_restate_server()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "restate.toml"
        config.write_text(self._config())
        scratch = self.workdir / "tmp"  # its invoker's temporary files: not left in /tmp
        scratch.mkdir(exist_ok=True)
        self.process = Process(
            "restate-server",
            [
                str(binary),
                "--config-file",
                str(config),
                "--base-dir",
                str(self.workdir / "data"),
                "--listen-mode",
                "tcp",
                "--no-logo",
            ],
            self.workdir / "restate.log",
            env={
                "RUST_LOG": os.environ.get("RESTATE_TEST_LOG", "warn,restate=info"),
                "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
                "TMPDIR": str(scratch),
            },
        )
        self.process.start()
        self.process.wait_until(self._healthy, timeout, "healthy")

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.admin_url}/health", timeout=1) as resp:
            if resp.status != 200:
                return False
        # the ingress answers 404 for an unknown service once it is serving
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"{self.ingress_url}/restate/health", timeout=1)
        return True

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (SIGTERM) and start again on the same ports and data: state survives."""
        self.stop()
        assert self.process is not None
        self.process.start()
        self.process.wait_until(self._healthy, timeout, "healthy after restart")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)

    # -- admin API ---------------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.admin_url}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json", "accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"admin {method} {path} -> {exc.code}: {exc.read().decode(errors='replace')}"
            ) from exc
        return json.loads(raw) if raw else None

    def register(self, deployment_url: str, *, force: bool = True) -> Any:
        return self.admin("POST", "/deployments", {"uri": deployment_url, "force": force})

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run SQL over Restate's system tables (``sys_invocation``, ``state``, ...)."""
        rows: list[dict[str, Any]] = self.admin("POST", "/query", {"query": sql})["rows"]
        return rows
