"""Attach/output by idempotency key, for every key the bridge can produce, against the real Restate.

Restate does not percent-decode the idempotency-key segment of
``/restate/invocation/{service}[/{key}]/{handler}/{idempotency-key}/attach|output`` (its
``path_parsing.rs`` decodes the object key before it, not this one), so ``a%3Ab`` is looked up
as those five characters and every percent-encoded key answers 404. The client sends a key made
of path characters as it is, and looks any other key up with Restate 1.7's
``POST /restate/attach|output`` and a JSON target.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from bridge.config import parse_config
from bridge.core.record import Record
from bridge.core.routing import Invocation, Router
from bridge.ingress import Client, InvalidRequest, InvocationError, ResponseError
from tests.helpers import unique
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration

KEYS = [
    "plain",
    "a:b",
    "with space",
    "a/b",
    "50%",
    "a%3Ab",  # a literal percent sequence: must not be decoded into "a:b"
    "q?x",
    "h#x",
    'quote"d',
    "!$&'()*+,;=@~",
    ".",
    "..",
    "",
]


SPECIAL = ("", ".", "..")  # kept exactly: a prefix would make them ordinary


@pytest.mark.parametrize("key", KEYS)
async def test_service_invocation_by_any_key(client: Client, key: str) -> None:
    idem = key if key in SPECIAL else f"{unique('')}{key}"
    name = unique("idem")
    receipt = await client.service("Greeter", "greet").send(name, idempotency_key=idem)
    handle = client.service_invocation("Greeter", "greet", idem)
    expected = f"Hello, {name}!"
    assert await client.invocation(receipt.invocation_id).attach() == expected
    assert await handle.attach() == expected
    assert await handle.output() == expected


@pytest.mark.parametrize("key", KEYS)
async def test_object_invocation_by_any_key(client: Client, key: str) -> None:
    obj, idem = unique("obj/odd key"), key  # the object key makes the scope unique
    receipt = await client.object("Recorder", obj, "record").send({"k": key}, idempotency_key=idem)
    handle = client.object_invocation("Recorder", obj, "record", idem)
    assert await handle.attach() == 1
    assert await handle.output() == 1
    assert await handle.output(output=bytes) == b"1"
    # the same invocation, not a second one
    assert await client.invocation(receipt.invocation_id).output() == 1
    assert await client.object("Recorder", obj, "get").request() == [{"k": key}]


async def test_a_request_with_an_odd_key_can_be_attached_again(client: Client) -> None:
    idem = unique("order 42/eu:charge")
    first = await client.service("Greeter", "greet").request("Ada", idempotency_key=idem)
    again = await client.service_invocation("Greeter", "greet", idem).attach()
    assert first == again == "Hello, Ada!"


def bridge_invocation(route_name: str, topic: str, offset: int) -> Invocation:
    config = parse_config(
        '[kafka]\nbootstrap_servers = "b:9092"\n[[routes]]\n'
        f'name = "{route_name}"\ntopic = "{topic}"\n'
        'target = "service"\nservice = "Greeter"\nhandler = "greet"\n',
        Path("routes.toml"),
        {},
    )
    [planned] = Router(config).plan(Record(topic, 3, offset, 0, b"k", b'"Kafka"', ()))
    assert isinstance(planned, Invocation)
    return planned


@pytest.mark.parametrize("route_name", ["orders", "to greeter / eu 100%"])
async def test_the_bridges_default_keys_are_attachable(client: Client, route_name: str) -> None:
    topic = unique("orders.v1")
    invocation = bridge_invocation(route_name, topic, 42)
    assert invocation.idempotency_key == f"{topic}-3-42:{route_name}"
    assert invocation.body is not None
    await invocation.target(client).send(
        invocation.body,
        content_type=invocation.content_type,
        idempotency_key=invocation.idempotency_key,
    )
    handle = client.service_invocation("Greeter", "greet", invocation.idempotency_key)
    assert await handle.attach() == "Hello, Kafka!"
    assert await handle.output(output=str) == "Hello, Kafka!"


async def test_a_non_ascii_key_is_refused_before_sending(
    client: Client, restate: RestateServer
) -> None:
    sql = "select count(*) as n from sys_invocation where target = 'Greeter/greet'"
    [before] = restate.query(sql)
    idem = unique("ünï")
    with pytest.raises(InvalidRequest, match="not printable ASCII"):
        await client.service("Greeter", "greet").send("x", idempotency_key=idem)
    with pytest.raises(InvalidRequest, match="not printable ASCII"):
        await client.service("Greeter", "greet").request("x", idempotency_key=idem)
    assert restate.query(sql) == [before]


async def test_a_non_ascii_key_made_inside_a_handler_is_attachable(client: Client) -> None:
    # no HTTP header can carry it, but a handler's own send can: the JSON lookup finds it
    idem = unique("ünï ключ/€")
    invocation_id = await client.service("Relay", "sendWithKey").request(
        {"service": "Greeter", "handler": "greet", "input": "Ünï", "idempotency_key": idem}
    )
    handle = client.service_invocation("Greeter", "greet", idem)
    assert await handle.attach() == "Hello, Ünï!"
    assert await handle.output() == "Hello, Ünï!"
    assert await client.invocation(invocation_id).output() == "Hello, Ünï!"


async def test_unknown_keys_answer_404_on_both_paths(client: Client) -> None:
    for idem in (unique("never"), unique("never seen/odd key")):
        handle = client.service_invocation("Greeter", "greet", idem)
        with pytest.raises(ResponseError) as output_info:
            await handle.output()
        assert (output_info.value.status, output_info.value.source) == (404, "ingress")
        # attach reports an unknown invocation as its outcome: 404 from the "invocation"
        with pytest.raises(InvocationError) as attach_info:
            await handle.attach(timeout=10)
        assert (attach_info.value.status, attach_info.value.message) == (404, "not found")


async def test_restate_still_does_not_decode_the_idempotency_segment(
    client: Client, restate: RestateServer
) -> None:
    """Why the client does not percent-encode that segment: if a Restate upgrade starts
    decoding it, this fails, and the raw/JSON split in ``object_invocation`` can go."""
    idem = unique("a:b")
    await client.service("Greeter", "greet").send("x", idempotency_key=idem)
    await client.service_invocation("Greeter", "greet", idem).attach()
    base = f"{restate.ingress_url}/restate/invocation/Greeter/greet"
    async with aiohttp.ClientSession() as http:
        encoded = URL(f"{base}/{quote(idem, safe='')}/output", encoded=True)
        async with http.get(encoded) as resp:
            assert resp.status == 404
        async with http.get(URL(f"{base}/{idem}/output", encoded=True)) as resp:
            assert (resp.status, await resp.read()) == (200, b'"Hello, x!"')
