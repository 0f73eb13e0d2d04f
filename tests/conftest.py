"""Session fixtures that start the real stack: brokers, a Restate server, Python handlers.

Every process runs on free loopback ports with its own directory under pytest's temp dir (kept
for the last three runs). When a test fails, its report names the stack's log files and shows
their tails. Every process leads its own process group; a SIGTERM (or SIGHUP) to pytest kills them
all before pytest unwinds (``tests/stack/procs.py``, proven by ``tests/test_cleanup.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.ingress import Client
from tests.stack import procs
from tests.stack.bridge_process import BridgeFactory
from tests.stack.brokers import BROKERS, Broker, BrokerUnavailable, make_broker
from tests.stack.logs import keep_log, tails
from tests.stack.proxy import IngressProxy
from tests.stack.registry import ApicurioRegistry
from tests.stack.restate import RestateServer
from tests.stack.services import HandlerServer

__all__ = ["BridgeFactory", "Broker"]  # tests import them from tests.stack; kept for old imports


def pytest_configure(config: pytest.Config) -> None:
    # without it, SIGTERM kills pytest outright: no teardown, every stack process left running
    procs.install_reaper(interrupt=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    signum = procs.terminated_by()
    if signum is not None:
        session.exitstatus = 128 + signum  # as a shell reports a death by that signal


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed:
        report.sections.extend(tails(item))
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
        keep_log(request.config, log)
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def handlers(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[HandlerServer]:
    server = HandlerServer(stack_dir / "handlers")
    server.start()
    keep_log(request.config, server.workdir / "handlers.log")
    yield server
    server.stop()


def _restate(
    owner: pytest.Config | pytest.Item,
    workdir: Path,
    handlers: HandlerServer | None,
    options: str = "",
) -> Iterator[RestateServer]:
    """A Restate server in ``workdir`` (with the server-wide ``options``, TOML lines), its log
    kept for ``owner``'s failure reports, with the test handlers registered unless ``handlers``
    is None; stopped at the end."""
    server = RestateServer(workdir, options=options)
    server.start()
    keep_log(owner, server.workdir / "restate.log")
    try:
        if handlers is not None:
            handlers.register_with(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def restate(
    request: pytest.FixtureRequest, stack_dir: Path, handlers: HandlerServer
) -> Iterator[RestateServer]:
    """A Restate server with the test handlers registered, shared by the whole session."""
    yield from _restate(request.config, stack_dir / "restate", handlers)


@pytest.fixture(scope="session")
def demo_services(
    request: pytest.FixtureRequest, stack_dir: Path, restate: RestateServer
) -> Iterator[RestateServer]:
    """The session's Restate with the demo's services (``examples/handlers.py``: ``Notifier``,
    ``Orders``, ``Payment``) registered besides the test handlers, as ``make demo`` has them."""
    server = HandlerServer(stack_dir / "demo-handlers", "examples.handlers:app")
    server.start()
    keep_log(request.config, server.workdir / "handlers.log")
    try:
        server.register_with(restate)
        yield restate
    finally:
        server.stop()


SCOPED_OPTIONS = (
    "experimental-enable-vqueues = true\nexperimental-enable-scoped-virtual-objects = true"
)
"""Restate 1.7's options for scoped invocations (``/restate/scope/{scope}/...``, limit keys):
vqueues for any scoped target, and scoped virtual objects for objects."""


@pytest.fixture(scope="session")
def scoped_restate(
    request: pytest.FixtureRequest, stack_dir: Path, handlers: HandlerServer
) -> Iterator[RestateServer]:
    """A Restate server with scoped invocations switched on and the test handlers registered,
    shared by the session (started by the first test that asks for it)."""
    yield from _restate(request.config, stack_dir / "scoped-restate", handlers, SCOPED_OPTIONS)


@pytest.fixture
async def scoped_client(scoped_restate: RestateServer) -> AsyncIterator[Client]:
    async with Client(scoped_restate.ingress_url, timeout=30) as c:
        yield c


@pytest.fixture
def scoped_bridges(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    broker: Broker,
    scoped_restate: RestateServer,
) -> Iterator[BridgeFactory]:
    """Start bridge processes against the session broker and the scoped Restate server."""
    factory = BridgeFactory(request, tmp_path, broker, scoped_restate)
    yield factory
    factory.stop_all()


@pytest.fixture
async def client(restate: RestateServer) -> AsyncIterator[Client]:
    async with Client(restate.ingress_url, timeout=30) as c:
        yield c


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


@pytest.fixture
def proxy(restate: RestateServer) -> Iterator[IngressProxy]:
    """A counting proxy in front of the session's Restate ingress (see tests/stack/proxy.py)."""
    instance = IngressProxy(restate.ingress_url)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def own_restate(
    request: pytest.FixtureRequest, tmp_path: Path, handlers: HandlerServer
) -> Iterator[RestateServer]:
    """A Restate server for one test, which may stop and restart it."""
    yield from _restate(request.node, tmp_path / "restate", handlers)


@pytest.fixture
async def own_client(own_restate: RestateServer) -> AsyncIterator[Client]:
    async with Client(own_restate.ingress_url, timeout=10) as c:
        yield c


@pytest.fixture
def bare_restate(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RestateServer]:
    """A Restate server for one test with nothing registered (the test registers what it needs)."""
    yield from _restate(request.node, tmp_path / "bare-restate", None)


def _registry(owner: pytest.Config | pytest.Item, workdir: Path) -> Iterator[ApicurioRegistry]:
    from tests.stack import registry

    reason = registry.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Apicurio Registry is mandatory in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    server = registry.ApicurioRegistry(workdir)
    try:
        server.start()
        keep_log(owner, workdir / "registry.log")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def schema_registry(request: pytest.FixtureRequest, stack_dir: Path) -> Iterator[ApicurioRegistry]:
    """Apicurio Registry (the Confluent API at ``.url``), shared by the whole session."""
    yield from _registry(request.config, stack_dir / "registry")


@pytest.fixture
def own_schema_registry(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ApicurioRegistry]:
    """A registry for one test, which may stop and restart it (its schemas survive)."""
    yield from _registry(request.node, tmp_path / "registry")
