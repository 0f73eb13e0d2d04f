"""The handler process: hypercorn serving a restate-sdk app, registered with a Restate server."""

from __future__ import annotations

import sys
from pathlib import Path

from .procs import Process, free_port, port_open
from .restate import RestateServer

REPO_ROOT = Path(__file__).resolve().parents[2]


class HandlerServer:
    """Serves ``app_ref`` (``module:attribute``) over HTTP/2 cleartext on a free port."""

    def __init__(
        self,
        workdir: Path,
        app_ref: str = "tests.stack.handlers:app",
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.app_ref = app_ref
        self.env = env
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.process = Process(
            "handlers",
            [
                sys.executable,
                "-m",
                "hypercorn",
                self.app_ref,
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--keep-alive",
                "3600",
            ],
            self.workdir / "handlers.log",
            cwd=REPO_ROOT,
            env=self.env,
        )
        self.process.start()
        self.process.wait_until(lambda: port_open(self.port), timeout, "listening")

    def register_with(self, restate: RestateServer) -> None:
        restate.register(self.url)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
