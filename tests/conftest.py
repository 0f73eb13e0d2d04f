"""Session fixtures that start the real stack: brokers, a Restate server, Python handlers.

Every process runs on free loopback ports with its own directory under pytest's temp dir (kept
for the last three runs). When a test fails, its report names the stack's log files and shows
their tails.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.ingress import Client
from tests.stack.bridge_process import BridgeProcess, routes_toml
from tests.stack.brokers import BROKERS, Broker, BrokerUnavailable, make_broker
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

LOGS_KEY = pytest.StashKey[list[Path]]()


def _keep_log(owner: pytest.Config | pytest.Item, path: Path) -> None:
    """Show ``path``'s tail when a test fails: every test for the session's servers (owner: the
    config), only the owning test for its own processes (owner: the test item)."""
    owner.stash.setdefault(LOGS_KEY, []).append(path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed:
        for path in [*item.config.stash.get(LOGS_KEY, []), *item.stash.get(LOGS_KEY, [])]:
            if path.exists():
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-30:])
                report.sections.append((f"stack log {path}", tail))
    return report


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


def _start_broker(name: str, workdir: Path) -> Broker:
    try:
        return make_broker(name, workdir)
    except BrokerUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Apache Kafka is mandatory in CI: {exc}", pytrace=False)
        pytest.skip(f"Apache Kafka half skipped: {exc}")


@pytest.fixture(scope="session", params=BROKERS)
def broker(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[Broker]:
    """A running Kafka-protocol broker; every test using it runs once per broker."""
    name: str = request.param
    workdir = stack_dir / name
    instance = _start_broker(name, workdir)
    try:
        instance.start()
    except Exception as exc:
        if os.environ.get("CI") == "true" or name == "tansu":
            raise
        pytest.skip(f"{name} could not start here: {exc}")
    for log in sorted(workdir.glob("*.log")):
        _keep_log(request.config, log)
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def handlers(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[HandlerServer]:
    server = HandlerServer(stack_dir / "handlers")
    server.start()
    _keep_log(request.config, server.workdir / "handlers.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def restate(
    request: pytest.FixtureRequest, stack_dir: Path, handlers: HandlerServer
) -> Iterator[RestateServer]:
    """A Restate server with the test handlers registered, shared by the whole session."""
    server = RestateServer(stack_dir / "restate")
    server.start()
    _keep_log(request.config, server.workdir / "restate.log")
    handlers.register_with(server)
    yield server
    server.stop()


@pytest.fixture
async def client(restate: RestateServer) -> AsyncIterator[Client]:
    async with Client(restate.ingress_url, timeout=30) as c:
        yield c


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

    def routes(self, routes: str, *, group_id: str, **kwargs: object) -> str:
        return routes_toml(
            bootstrap=self.broker.bootstrap_servers,
            ingress_url=self.restate.ingress_url,
            group_id=group_id,
            metrics_port=0,
            routes=routes,
            **kwargs,  # type: ignore[arg-type]
        )

    def start(
        self,
        routes: str,
        *,
        group_id: str,
        name: str = "bridge",
        ingress_url: str | None = None,
        wait_ready: bool = True,
        **kwargs: object,
    ) -> BridgeProcess:
        proc = BridgeProcess(self.workdir, f"{name}-{len(self.started)}")
        text = routes_toml(
            bootstrap=self.broker.bootstrap_servers,
            ingress_url=ingress_url or self.restate.ingress_url,
            group_id=group_id,
            metrics_port=proc.metrics_port,
            routes=routes,
            **kwargs,  # type: ignore[arg-type]
        )
        proc.write_routes(text)
        _keep_log(self.request.node, proc.process.log_path)
        self.started.append(proc)
        proc.start(wait_ready=wait_ready)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.kill()


@pytest.fixture
def bridges(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    broker: Broker,
    restate: RestateServer,
) -> Iterator[BridgeFactory]:
    """Start bridge processes against the session broker and Restate server."""
    factory = BridgeFactory(request, tmp_path, broker, restate)
    yield factory
    factory.stop_all()
