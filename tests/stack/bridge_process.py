"""The bridge as users run it: ``python -m bridge run --routes FILE`` in its own process."""

from __future__ import annotations

import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .procs import Process, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def routes_toml(
    *,
    bootstrap: str,
    ingress_url: str,
    group_id: str,
    metrics_port: int,
    routes: str,
    dead_letter_topic: str | None = None,
    delivery: str = "",
) -> str:
    """A routes file for the test stack; ``routes`` is the ``[[routes]]`` part, verbatim."""
    dlq = f'\n[dead_letter]\ntopic = "{dead_letter_topic}"\n' if dead_letter_topic else ""
    return f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group_id}"
auto_offset_reset = "earliest"
# tansu holds a new member's first join for half the session timeout: keep it short
session_timeout_ms = 6000

[restate]
ingress_url = "{ingress_url}"
request_timeout = "10s"

[metrics]
listen = "127.0.0.1:{metrics_port}"
{dlq}
[delivery]
commit_interval = "200ms"
drain_timeout = "20s"
retry_max = "1s"
{delivery}

{routes}
"""


class BridgeProcess:
    """One bridge worker process with its routes file and log in ``workdir``."""

    def __init__(self, workdir: Path, name: str = "bridge") -> None:
        self.workdir = workdir
        self.name = name
        self.metrics_port = free_port()
        self.routes_path = workdir / f"{name}.routes.toml"
        self.process = Process(
            name,
            [sys.executable, "-m", "bridge", "run", "--routes", str(self.routes_path)],
            workdir / f"{name}.log",
            cwd=REPO_ROOT,
            env={"PYTHONUNBUFFERED": "1"},
        )

    def write_routes(self, text: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.routes_path.write_text(text)

    def start(self, *, wait_ready: bool = True, timeout: float = 60) -> None:
        self.process.start()
        if wait_ready:
            self.process.wait_until(self.ready, timeout, "ready (/readyz)")

    def _get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError):
            return 0, b""  # not listening (yet, or any more)

    def ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def readyz(self) -> tuple[int, dict[str, str]]:
        status, body = self._get("/readyz")
        return status, json.loads(body) if body else {}

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` as ``'name{labels}' -> value``."""
        _, body = self._get("/metrics")
        samples: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, prefix: str) -> float:
        """The sum of every sample whose name starts with ``prefix``."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait for the exit code."""
        return self.process.stop(timeout=timeout)

    def kill(self) -> None:
        self.process.kill()

    def signal(self, sig: signal.Signals) -> None:
        self.process.signal(sig)

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")
