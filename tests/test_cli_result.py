"""``restate-bridge result``: the real CLI process against the real Restate server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.ingress import Client, SyncClient
from tests.helpers import unique
from tests.stack.procs import free_port
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESTATE_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bridge", "result", *args],
        capture_output=True,
        env=environ,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def start(*args: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESTATE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "result", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
        cwd=REPO,
    )


async def test_by_invocation_id(client: Client, restate: RestateServer) -> None:
    receipt = await client.service("Greeter", "greet").send("Ada")
    await client.invocation(receipt.invocation_id).attach()
    done = cli("--id", receipt.invocation_id, "--url", restate.ingress_url)
    assert (done.returncode, done.stdout, done.stderr) == (0, b'"Hello, Ada!"\n', b"")


async def test_by_idempotency_key_of_a_service_and_an_object(
    client: Client, restate: RestateServer
) -> None:
    idem = unique("orders-0-42:route / eu")
    await client.service("Greeter", "greet").request("Bo", idempotency_key=idem)
    done = cli(
        "--service",
        "Greeter",
        "--handler",
        "greet",
        "--idempotency-key",
        idem,
        "--url",
        restate.ingress_url,
    )
    assert (done.returncode, done.stdout) == (0, b'"Hello, Bo!"\n')
    key = unique("acct/7 x")
    await client.object("Recorder", key, "record").request({"n": 1}, idempotency_key=idem)
    done = cli(
        "--service",
        "Recorder",
        "--key",
        key,
        "--handler",
        "record",
        "--idempotency-key",
        idem,
        "--url",
        restate.ingress_url,
    )
    assert (done.returncode, done.stdout) == (0, b"1\n")


async def test_raw_bytes_are_printed_byte_for_byte(client: Client, restate: RestateServer) -> None:
    payload = bytes(range(256))
    idem = unique("raw")
    await client.service("Greeter", "rawEcho").request(payload, idempotency_key=idem)
    done = cli(
        "--service",
        "Greeter",
        "--handler",
        "rawEcho",
        "--idempotency-key",
        idem,
        "--url",
        restate.ingress_url,
        "--raw",
    )
    assert (done.returncode, done.stdout) == (0, payload)


async def test_a_workflow_not_finished_then_waited_for(
    client: Client, restate: RestateServer
) -> None:
    wf_id = unique("wf/cli")
    await client.workflow("Signup", wf_id).send("ada@example.com")
    args = ("--workflow", "Signup", "--workflow-id", wf_id, "--url", restate.ingress_url)
    early = cli(*args)
    assert early.returncode == 1
    assert early.stdout == b""
    assert b"not finished yet (--wait to wait for it)" in early.stderr
    waiting = start(*args, "--wait")
    await asyncio.sleep(1)
    assert waiting.poll() is None  # attached, waiting
    await client.workflow("Signup", wf_id, "approve").request("carol")
    out, err = waiting.communicate(timeout=30)
    assert (waiting.returncode, out, err) == (0, b'"ada@example.com approved by carol"\n', b"")


async def test_a_failed_invocation(client: Client, restate: RestateServer) -> None:
    idem = unique("fail")
    receipt = await client.service("Greeter", "fail").send("card declined", idempotency_key=idem)
    for extra in ((), ("--wait",)):
        done = cli("--id", receipt.invocation_id, "--url", restate.ingress_url, *extra)
        assert done.returncode == 1
        assert done.stdout == b""
        assert b"failed: 400 card declined" in done.stderr


def test_not_found(restate: RestateServer) -> None:
    unknown = ("--service", "Greeter", "--handler", "greet", "--idempotency-key")
    for args in (
        (*unknown, unique("never")),
        (*unknown, unique("never seen/odd"), "--wait", "--timeout", "10"),
        ("--workflow", "Signup", "--workflow-id", unique("never")),
        ("--workflow", "Signup", "--workflow-id", unique("never"), "--wait"),
    ):
        done = cli(*args, "--url", restate.ingress_url)
        assert done.returncode == 1, args
        assert b"not found (never made, or its result expired)" in done.stderr, args


def test_the_url_from_the_environment_or_a_routes_file(
    restate: RestateServer, tmp_path: Path
) -> None:
    receipt_id = _send_and_wait(restate)
    done = cli("--id", receipt_id, env={"RESTATE_URL": restate.ingress_url})
    assert (done.returncode, done.stdout) == (0, b'"Hello, env!"\n')
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[kafka]\nbootstrap_servers = "127.0.0.1:9092"\n[restate]\n'
        f'ingress_url = "{restate.ingress_url}"\n'
        '[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "Greeter"\nhandler = "greet"\n'
    )
    done = cli("--id", receipt_id, "--routes", str(routes))
    assert (done.returncode, done.stdout) == (0, b'"Hello, env!"\n')


def _send_and_wait(restate: RestateServer) -> str:
    with SyncClient(restate.ingress_url) as sync:
        receipt = sync.service("Greeter", "greet").send("env")
        sync.invocation(receipt.invocation_id).attach()
    return receipt.invocation_id


def test_an_unreachable_ingress_is_a_clear_failure() -> None:
    done = cli("--id", "inv_1abc", "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert b"Cannot connect" in done.stderr or b"connect" in done.stderr.lower()
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--id", "inv_1", "--workflow", "W"),
        ("--service", "Greeter", "--handler", "greet"),
        ("--service", "Greeter", "--idempotency-key", "k"),
        ("--id", "inv_1", "--handler", "greet"),
        ("--id", "inv_1", "--key", "k"),
        ("--workflow", "Signup"),
        ("--id", "inv_1", "--workflow-id", "x"),
        ("--id", "inv_1", "--timeout", "5"),
        ("--id", "inv_1", "--wait", "--timeout", "-1"),
        ("--id", "inv_1", "--wait", "--timeout", "soon"),
    ],
)
def test_bad_arguments_exit_2(args: tuple[str, ...]) -> None:
    done = cli(*args, "--url", "http://127.0.0.1:9")
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr


def test_a_bad_routes_file_exits_2(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text("[kafka]\n")
    done = cli("--id", "inv_1", "--routes", str(routes))
    assert done.returncode == 2
    assert str(routes).encode() in done.stderr
