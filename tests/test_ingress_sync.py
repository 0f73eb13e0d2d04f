"""Typed outputs and the blocking SyncClient against the real Restate server and handlers."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TypedDict

import pytest

from bridge.ingress import (
    Client,
    ConnectError,
    DecodeError,
    IngressTimeout,
    InvocationError,
    NotReady,
    ResponseError,
    SendStatus,
    SyncClient,
)
from tests.helpers import unique
from tests.stack.procs import free_port
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Payment:
    order_id: str
    amount: int


@dataclass(frozen=True)
class Receipt:
    transaction_id: str
    status: str
    amount: int


class ReceiptDict(TypedDict):
    transaction_id: str
    status: str


# -- typed outputs, asyncio ---------------------------------------------------------------------


async def test_request_decodes_into_a_dataclass_and_a_typeddict(client: Client) -> None:
    charge = client.service("Payments", "charge")
    payment = {"order_id": "o-1", "amount": 5}
    assert await charge.request(payment, output=Receipt) == Receipt("tx-o-1", "charged", 5)
    typed = await charge.request(payment, output=ReceiptDict)
    assert typed == {"transaction_id": "tx-o-1", "status": "charged", "amount": 5}


async def test_attach_and_output_decode_and_bytes_are_raw(client: Client) -> None:
    idem = unique("pay o-2/eu")
    await client.service("Payments", "charge").send(
        {"order_id": "o-2", "amount": 7}, idempotency_key=idem
    )
    handle = client.service_invocation("Payments", "charge", idem)
    assert await handle.attach(output=Receipt) == Receipt("tx-o-2", "charged", 7)
    raw = await handle.output(output=bytes)
    assert isinstance(raw, bytes)
    # exactly as the handler's SDK wrote it (Python's json.dumps spacing), not re-encoded
    assert raw == b'{"transaction_id": "tx-o-2", "status": "charged", "amount": 7}'
    assert await handle.output(output=dict) == {
        "transaction_id": "tx-o-2",
        "status": "charged",
        "amount": 7,
    }


async def test_a_mismatch_is_a_decode_error_after_the_call(client: Client) -> None:
    with pytest.raises(DecodeError) as info:
        await client.service("Payments", "charge").request(
            {"order_id": "o-3", "amount": 1}, output=Payment
        )
    err = info.value
    assert "Payment needs 'order_id'" in str(err)
    assert b"tx-o-3" in err.body
    assert not err.retryable


async def test_an_unsupported_output_type_is_refused_before_the_call(
    client: Client, restate: RestateServer
) -> None:
    sql = "select count(*) as n from sys_invocation where target = 'Payments/charge'"
    [before] = restate.query(sql)
    with pytest.raises(TypeError, match="can decode into"):
        await client.service("Payments", "charge").request({}, output=set)
    with pytest.raises(TypeError, match="can decode into"):
        await client.invocation("inv_1").attach(output=complex)
    assert restate.query(sql) == [before]


# -- SyncClient ---------------------------------------------------------------------------------


@pytest.fixture
def sync(restate: RestateServer) -> Iterator[SyncClient]:
    with SyncClient(restate.ingress_url, timeout=30) as client:
        yield client


def test_sync_calls_sends_and_typed_results(sync: SyncClient) -> None:
    assert sync.service("Greeter", "greet").request("Ada") == "Hello, Ada!"
    receipt = sync.service("Payments", "charge").send({"order_id": "s-1", "amount": 3})
    assert receipt.status is SendStatus.ACCEPTED
    handle = sync.invocation(receipt.invocation_id)
    assert handle.attach(output=Receipt) == Receipt("tx-s-1", "charged", 3)
    key = unique("sync obj/1")
    assert sync.object("Recorder", key, "record").request("x", idempotency_key="k 1") == 1
    assert sync.object_invocation("Recorder", key, "record", "k 1").output() == 1
    sync.health()


def test_sync_workflow_output_not_ready_then_attach(sync: SyncClient) -> None:
    wf_id = unique("wf/sync")
    sync.workflow("Signup", wf_id).send("ada@example.com")
    handle = sync.workflow_handle("Signup", wf_id)
    with pytest.raises(NotReady):
        handle.output()
    sync.workflow("Signup", wf_id, "approve").request("bob")
    assert handle.attach(output=str) == "ada@example.com approved by bob"


def test_sync_errors_are_the_same_classes(sync: SyncClient) -> None:
    with pytest.raises(InvocationError) as info:
        sync.service("Greeter", "fail").request("card declined")
    assert (info.value.status, info.value.message) == (400, "card declined")
    with pytest.raises(ResponseError) as missing:
        sync.service_invocation("Greeter", "greet", unique("never/seen")).output()
    assert missing.value.status == 404
    with pytest.raises(IngressTimeout):
        sync.service("Greeter", "slow").request(2, timeout=0.3)
    with pytest.raises(DecodeError):
        sync.service("Greeter", "greet").request("x", output=int)
    with SyncClient(f"http://127.0.0.1:{free_port()}") as dead, pytest.raises(ConnectError):
        dead.service("Greeter", "greet").send("x")


def test_sync_client_is_shared_by_threads_concurrently(sync: SyncClient) -> None:
    results: list[object] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(sync.service("Greeter", "slow").request(0.5))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert not errors
    assert results == ["done"] * 16
    assert elapsed < 4, f"16 calls of 0.5 s took {elapsed:.1f} s: not concurrent"


def test_sync_lifecycle(restate: RestateServer, monkeypatch: pytest.MonkeyPatch) -> None:
    unused = SyncClient(restate.ingress_url)
    unused.close()
    unused.close()
    with pytest.raises(RuntimeError, match="Cannot reopen"):
        unused.service("Greeter", "greet").request("x")
    client = SyncClient(restate.ingress_url)
    assert client.service("Greeter", "greet").request("x") == "Hello, x!"
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="Cannot reopen"):
        client.service("Greeter", "greet").request("x")
    assert not [t for t in threading.enumerate() if t.name == "restate-ingress-sync"]
    monkeypatch.setenv("RESTATE_URL", restate.ingress_url)
    monkeypatch.setenv("RESTATE_AUTH_TOKEN", "t0k3n")
    with SyncClient.from_env() as env:
        assert "t0k3n" not in repr(env)
        assert env.url == restate.ingress_url
        assert env.service("Greeter", "headers").request(None)["authorization"] == "Bearer t0k3n"


class Interrupted(Exception):
    pass


def test_an_interrupt_while_waiting_cancels_the_request(sync: SyncClient) -> None:
    """What Ctrl-C does: the signal handler's exception leaves the wait at once, the request
    is cancelled on the loop, and the client stays usable."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            sync.service("Greeter", "slow").request(5, timeout=None)
        assert time.monotonic() - started < 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    async def others() -> int:  # the request's task is gone from the client's loop
        await asyncio.sleep(0.1)
        return len(asyncio.all_tasks()) - 1

    assert sync._run(others()) == 0
    assert sync.service("Greeter", "greet").request("after") == "Hello, after!"
