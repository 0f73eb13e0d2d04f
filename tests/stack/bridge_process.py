"""The bridge as users run it: ``python -m bridge run --routes FILE`` in its own process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .brokers import Broker
from .logs import keep_log
from .procs import Process, free_port
from .restate import RestateServer

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
    restate_extra: str = "",
    metrics_extra: str = "",
    kafka_extra: str = "",
) -> str:
    """A routes file for the test stack; ``routes`` is the ``[[routes]]`` part, verbatim;
    ``kafka_extra``, ``restate_extra`` and ``metrics_extra`` are lines appended to those tables
    (TLS, SASL and secret options)."""
    dlq = f'\n[dead_letter]\ntopic = "{dead_letter_topic}"\n' if dead_letter_topic else ""
    # the test defaults, each overridable by a line of ``delivery``
    settings = {"commit_interval": '"200ms"', "drain_timeout": '"20s"', "retry_max": '"1s"'}
    for line in delivery.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            settings[name.strip()] = value.strip()
    delivery_table = "\n".join(f"{k} = {v}" for k, v in settings.items())
    return f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group_id}"
auto_offset_reset = "earliest"
# tansu holds a new member's first join for half the session timeout: keep it short
session_timeout_ms = 6000
{kafka_extra}
[restate]
ingress_url = "{ingress_url}"
request_timeout = "10s"
{restate_extra}
[metrics]
listen = "127.0.0.1:{metrics_port}"
{metrics_extra}
{dlq}
[delivery]
{delivery_table}

{routes}
"""


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class BridgeDied(AssertionError):
    """A bridge process the test still relied on has exited."""


class BridgeProcess:
    """One bridge worker process with its routes file and log in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        name: str = "bridge",
        *,
        env: dict[str, str] | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.metrics_port = metrics_port or free_port()
        self.token: str | None = None
        """The listener's bearer token, sent with every read when set."""
        self.routes_path = workdir / f"{name}.routes.toml"
        self.process = Process(
            name,
            [sys.executable, "-m", "bridge", "run", "--routes", str(self.routes_path)],
            workdir / f"{name}.log",
            cwd=REPO_ROOT,
            env={"PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def write_routes(self, text: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.routes_path.write_text(text)

    def start(self, *, wait_ready: bool = True, timeout: float = 60) -> None:
        """Start; wait until ready (``/readyz``), or only until serving (``/healthz``)."""
        self.process.start()
        if wait_ready:
            self.process.wait_until(self.ready, timeout, "ready (/readyz)")
        else:
            self.process.wait_until(self.serving, timeout, "serving (/healthz)")

    def serving(self) -> bool:
        return self._get("/healthz")[0] == 200

    def _get(self, path: str) -> tuple[int, bytes]:
        """``(status, body)``, ``(0, b"")`` while a live process does not listen yet.

        A process that has exited fails the test, with its exit code and its log's tail: a read
        from a dead bridge must never look like an empty answer.
        """
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=5
            ) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError):
            self.assert_alive(f"GET {path}")
            return 0, b""  # alive, not listening yet

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        with_token: bool = True,
        token: str | None = None,
        timeout: float = 60,
    ) -> tuple[int, dict[str, Any]]:
        """POST to the listener (the admin API): ``body`` as JSON (with its content type) or
        ``raw`` bytes as they are, with ``token`` as the bearer token (default: the bridge's;
        ``""`` or ``with_token=False`` sends none); ``(status, the JSON answer)``."""
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        sent = dict(headers or {})
        token = self.token if token is None else token
        if token and with_token:
            sent.setdefault("Authorization", f"Bearer {token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(url, data=data or b"", headers=sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def assert_alive(self, doing: str = "") -> None:
        if not self.process.alive():
            code = self.process.proc.returncode if self.process.proc else None
            raise BridgeDied(
                f"bridge {self.name} exited with {code}{' before ' + doing if doing else ''}; "
                f"log {self.process.log_path}:\n{self.process.log_tail()}"
            )

    def ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def readyz(self) -> tuple[int, dict[str, str]]:
        status, body = self._get("/readyz")
        return status, json.loads(body) if body else {}

    def text(self, path: str) -> str:
        """The body of ``GET path``; fails unless it answers 200."""
        status, body = self._get(path)
        if status != 200:
            raise AssertionError(f"bridge {self.name}: {path} answered {status or 'nothing'}")
        return body.decode(errors="replace")

    def status_json(self) -> dict[str, Any]:
        status, body = self._get("/status.json")
        if status != 200:
            raise AssertionError(f"bridge {self.name}: /status.json answered {status}")
        result: dict[str, Any] = json.loads(body)
        return result

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` as ``'name{labels}' -> value``; fails if there is none."""
        status, body = self._get("/metrics")
        if status != 200:
            raise AssertionError(f"bridge {self.name}: /metrics answered {status or 'nothing'}")
        samples: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, prefix: str) -> float:
        """The sum of every sample whose name starts with ``prefix``."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """The samples of metric ``name`` (exactly) whose labels include ``labels``."""
        out = []
        for sample, value in self.metrics().items():
            base, _, rest = sample.partition("{")
            found = dict(_LABEL.findall(rest))
            if base == name and all(found.get(k) == v for k, v in labels.items()):
                out.append((found, value))
        return out

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples matching ``labels`` (0 when there is none)."""
        return sum(v for _, v in self.samples(name, **labels))

    def per_partition(self, name: str, topic: str) -> dict[int, float]:
        return {int(lab["partition"]): v for lab, v in self.samples(name, topic=topic)}

    def committed(self, topic: str) -> dict[int, float]:
        """``{partition: offset}`` the bridge last committed for ``topic``."""
        return self.per_partition("restate_bridge_committed_offset", topic)

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait for the exit code."""
        return self.process.stop(timeout=timeout)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the process still runs after ``timeout`` seconds."""
        assert self.process.proc is not None
        try:
            return self.process.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def refused(self, timeout: float) -> tuple[str, str]:
        """Start the process and expect it to stop with exit code 3 and exactly one ERROR line,
        no traceback: that line, and the whole log."""
        self.process.start()
        code = self.wait(timeout)
        log = self.log()
        assert code == 3, f"exit code {code}; log:\n{log}"
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert len(errors) == 1, log
        assert "Traceback" not in log
        return errors[0], log

    def kill(self) -> None:
        self.process.kill()

    def signal(self, sig: signal.Signals) -> None:
        self.process.signal(sig)

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


class BridgeFactory:
    """Starts bridge processes for one test; every one is stopped (SIGKILL) at the end."""

    def __init__(
        self, request: pytest.FixtureRequest, workdir: Path, broker: Broker, restate: RestateServer
    ) -> None:
        self.request = request
        self.workdir = workdir
        self.broker = broker
        self.restate = restate
        self.started: list[BridgeProcess] = []

    def routes(self, routes: str, *, group_id: str, **kwargs: Any) -> str:
        return routes_toml(
            bootstrap=self.broker.bootstrap_servers,
            ingress_url=self.restate.ingress_url,
            group_id=group_id,
            metrics_port=0,
            routes=routes,
            **kwargs,
        )

    def start(
        self,
        routes: str,
        *,
        group_id: str,
        name: str = "bridge",
        ingress_url: str | None = None,
        wait_ready: bool = True,
        **kwargs: Any,
    ) -> BridgeProcess:
        """A bridge on the session broker with ``routes`` (the ``[[routes]]`` part)."""
        proc = self.process(name)
        proc.write_routes(
            routes_toml(
                bootstrap=self.broker.bootstrap_servers,
                ingress_url=ingress_url or self.restate.ingress_url,
                group_id=group_id,
                metrics_port=proc.metrics_port,
                routes=routes,
                **kwargs,
            )
        )
        proc.start(wait_ready=wait_ready)
        return proc

    def process(
        self, name: str = "bridge", *, env: dict[str, str] | None = None, metrics_port: int = 0
    ) -> BridgeProcess:
        """An unstarted bridge process (write its routes file, then start it)."""
        proc = BridgeProcess(
            self.workdir, f"{name}-{len(self.started)}", env=env, metrics_port=metrics_port or None
        )
        keep_log(self.request.node, proc.process.log_path)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.kill()
