"""The ingress client against a real Restate server and real Python handlers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bridge.ingress import (
    NO_INPUT,
    Client,
    ConnectError,
    IngressTimeout,
    InvocationError,
    NotReady,
    ResponseError,
    SendStatus,
)
from tests.helpers import eventually, recorded, unique
from tests.stack.procs import free_port
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration

ODD_KEYS = ["a/b", "with space", "ünï", "50%?&=#", ""]


# -- request-response -------------------------------------------------------------------------


async def test_service_request_returns_decoded_output(client: Client) -> None:
    assert await client.service("Greeter", "greet").request("Ada") == "Hello, Ada!"


async def test_call_without_input_sends_no_body_and_no_content_type(client: Client) -> None:
    # Restate rejects any content-type on a handler without input: this passes only if none is sent
    assert await client.service("Greeter", "ping").request() == "pong"
    assert await client.service("Greeter", "ping").request(NO_INPUT) == "pong"


async def test_bytes_pass_through_untouched_with_caller_content_type(client: Client) -> None:
    payload = bytes(range(256))
    out = await client.service("Greeter", "rawEcho").request(
        payload, content_type="application/octet-stream"
    )
    assert out == payload


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_object_keys_reach_the_handler_unchanged(client: Client, key: str) -> None:
    key = key + unique("") if key else key
    assert await client.object("Recorder", key, "key").request() == key
    await client.object("Recorder", key, "record").request({"n": 1})
    assert await client.object("Recorder", key, "get").request() == [{"n": 1}]


async def test_workflow_request_and_shared_handlers(client: Client) -> None:
    wf_id = unique("wf/odd id")
    run = asyncio.create_task(client.workflow("Signup", wf_id).request("ada@example.com"))
    status = client.workflow("Signup", wf_id, "status")
    assert await eventually(status.request, "waiting") == "waiting"
    await client.workflow("Signup", wf_id, "approve").request("bob")
    assert await run == "ada@example.com approved by bob"


async def test_headers_reach_the_handler(client: Client) -> None:
    got = await client.service("Greeter", "headers").request(
        None, headers={"x-trace": "t-1", "x-tenant": "acme"}
    )
    assert got["x-trace"] == "t-1"
    assert got["x-tenant"] == "acme"


# -- one-way sends ----------------------------------------------------------------------------


async def test_sends_to_all_three_kinds_return_receipts(
    client: Client, restate: RestateServer
) -> None:
    key, wf_id = unique("k"), unique("wf")
    receipts = [
        await client.service("Greeter", "greet").send("Ada"),
        await client.object("Recorder", key, "record").send("first"),
        await client.workflow("Signup", wf_id).send("ada@example.com"),
    ]
    for receipt in receipts:
        assert receipt.invocation_id.startswith("inv_")
        assert receipt.status is SendStatus.ACCEPTED
        assert receipt.execution_time is None
        assert not receipt.duplicate
    ids = {r.invocation_id for r in receipts}
    rows = restate.query("select id, target from sys_invocation")
    targets = {row["id"]: row["target"] for row in rows}
    assert {targets[i] for i in ids} == {
        "Greeter/greet",
        f"Recorder/{key}/record",
        f"Signup/{wf_id}/run",
    }
    assert await eventually(recorded(client, key), ["first"]) == ["first"]


async def test_second_workflow_run_is_previously_accepted(client: Client) -> None:
    wf_id = unique("wf")
    first = await client.workflow("Signup", wf_id).send("a@b")
    second = await client.workflow("Signup", wf_id).send("a@b")
    assert second.status is SendStatus.PREVIOUSLY_ACCEPTED
    assert second.duplicate
    assert second.invocation_id == first.invocation_id


async def test_idempotency_key_on_workflow_main_handler_is_explained(client: Client) -> None:
    with pytest.raises(ResponseError) as info:
        await client.workflow("Signup", unique("wf")).send("a@b", idempotency_key="k")
    assert info.value.status == 400
    assert info.value.source == "ingress"
    assert "idempotent by the workflow key" in info.value.message
    assert not info.value.retryable


async def test_delayed_send_runs_later(client: Client, restate: RestateServer) -> None:
    key = unique("delayed")
    before = datetime.now(UTC)
    receipt = await client.object("Recorder", key, "record").send(
        "later", delay=timedelta(seconds=2)
    )
    assert receipt.execution_time is not None
    assert timedelta(seconds=1.5) < receipt.execution_time - before < timedelta(seconds=4)
    [row] = restate.query(f"select status from sys_invocation where id = '{receipt.invocation_id}'")
    assert row["status"] == "scheduled"
    assert await client.object("Recorder", key, "get").request() == []
    got = await eventually(recorded(client, key), ["later"], timeout=15)
    assert got == ["later"]
    assert datetime.now(UTC) >= receipt.execution_time


async def test_duplicate_idempotency_key_returns_same_invocation(client: Client) -> None:
    key, idem = unique("idem"), unique("record")
    target = client.object("Recorder", key, "record")
    first = await target.send("once", idempotency_key=idem)
    second = await target.send("twice", idempotency_key=idem)
    assert first.status is SendStatus.ACCEPTED
    assert second.status is SendStatus.PREVIOUSLY_ACCEPTED
    assert second.invocation_id == first.invocation_id
    assert await client.object_invocation("Recorder", key, "record", idem).attach() == 1
    assert await client.object("Recorder", key, "get").request() == ["once"]


# -- attach and output ------------------------------------------------------------------------


async def test_attach_by_service_idempotency_key_returns_the_result(client: Client) -> None:
    idem = unique("greet")
    await client.service("Greeter", "greet").send("Grace", idempotency_key=idem)
    handle = client.service_invocation("Greeter", "greet", idem)
    assert await handle.attach() == "Hello, Grace!"
    assert await handle.output() == "Hello, Grace!"


async def test_attach_and_output_by_invocation_id(client: Client) -> None:
    receipt = await client.service("Greeter", "greet").send("Linus")
    handle = client.invocation(receipt.invocation_id)
    assert await handle.attach() == "Hello, Linus!"
    assert await handle.output() == "Hello, Linus!"


async def test_workflow_output_before_and_after_completion(client: Client) -> None:
    wf_id = unique("wf")
    await client.workflow("Signup", wf_id).send("ada@example.com")
    handle = client.workflow_handle("Signup", wf_id)
    with pytest.raises(NotReady) as info:
        await handle.output()
    assert info.value.status == 470
    await client.workflow("Signup", wf_id, "approve").request("carol")
    assert await handle.attach() == "ada@example.com approved by carol"
    assert await handle.output() == "ada@example.com approved by carol"


async def test_output_of_unknown_workflow_is_404(client: Client) -> None:
    with pytest.raises(ResponseError) as info:
        await client.workflow_handle("Signup", unique("never")).output()
    assert info.value.status == 404
    assert not isinstance(info.value, InvocationError)


# -- errors -----------------------------------------------------------------------------------


async def test_terminal_handler_error_is_an_invocation_error(client: Client) -> None:
    with pytest.raises(InvocationError) as info:
        await client.service("Greeter", "fail").request("card declined")
    err = info.value
    assert (err.status, err.code, err.message, err.source) == (
        400,
        400,
        "card declined",
        "invocation",
    )
    assert not err.retryable


async def test_unknown_service_is_an_ingress_404(client: Client) -> None:
    with pytest.raises(ResponseError) as info:
        await client.service("NoSuchService", "run").send({"x": 1})
    err = info.value
    assert not isinstance(err, InvocationError)
    assert (err.status, err.source, err.retryable) == (404, "ingress", False)
    assert "NoSuchService" in err.message


async def test_connection_refused_is_retryable() -> None:
    async with Client(f"http://127.0.0.1:{free_port()}", timeout=5) as dead:
        with pytest.raises(ConnectError) as info:
            await dead.service("Greeter", "greet").send("x")
    assert info.value.retryable
    assert info.value.status is None


async def test_timeout_is_retryable(client: Client) -> None:
    with pytest.raises(IngressTimeout) as info:
        await client.service("Greeter", "slow").request(3, timeout=0.3)
    assert info.value.retryable


async def test_cancellation_propagates(client: Client) -> None:
    task = asyncio.create_task(client.service("Greeter", "slow").request(3))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the client stays usable afterwards
    assert await client.service("Greeter", "greet").request("again") == "Hello, again!"


# -- configuration ----------------------------------------------------------------------------


async def test_from_env_sends_the_token_and_hides_it(
    restate: RestateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTATE_URL", restate.ingress_url)
    monkeypatch.setenv("RESTATE_AUTH_TOKEN", "s3cr3t-token")
    async with Client.from_env() as env_client:
        assert "s3cr3t" not in repr(env_client)
        assert env_client.url == restate.ingress_url
        got = await env_client.service("Greeter", "headers").request(None)
    assert got["authorization"] == "Bearer s3cr3t-token"


async def test_closed_client_cannot_be_reused(restate: RestateServer) -> None:
    c = Client(restate.ingress_url)
    assert await c.service("Greeter", "greet").request("x") == "Hello, x!"
    await c.aclose()
    await c.aclose()  # closing twice is fine
    with pytest.raises(RuntimeError, match="Cannot reopen"):
        await c.service("Greeter", "greet").request("x")


async def test_concurrent_sends_share_one_pool(client: Client) -> None:
    key = unique("many")
    receipts = await asyncio.gather(
        *(client.object("Recorder", f"{key}-{i % 8}", "record").send(i) for i in range(200))
    )
    assert len({r.invocation_id for r in receipts}) == 200
