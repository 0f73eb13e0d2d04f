"""The ingress as production runs it: behind TLS (a custom CA, a client certificate) and a token
that rotates. Restate 1.7.12 has no TLS of its own on the ingress (only on its node-to-node
fabric), so a TLS-terminating proxy started by the test stands in front of the real ingress;
the real bridge process delivers through it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from bridge.ingress import Client
from tests.helpers import recorded, recorder, unique, until
from tests.stack.bridge_process import BridgeFactory, BridgeProcess
from tests.stack.brokers import Broker
from tests.stack.kafka_io import Message, create_topics, produce
from tests.stack.proxy import IngressProxy
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration


class Tls:
    """A CA made for this test, the proxy's server certificate, and a client certificate."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = workdir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = self.ca.issue_cert("localhost", "127.0.0.1")
        client = self.ca.issue_cert("restate-bridge.test")
        self.cert_file, self.key_file = workdir / "client.pem", workdir / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.cert_file))
        client.private_key_pem.write_to_path(str(self.key_file))
        self.other_ca_file = workdir / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(self.other_ca_file))

    def server_context(self, *, client_certificates: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        if client_certificates:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(tmp_path / "tls")


@pytest.fixture
def proxies(restate: RestateServer) -> Iterator[list[IngressProxy]]:
    started: list[IngressProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def start_proxy(
    proxies: list[IngressProxy], restate: RestateServer, **kwargs: object
) -> IngressProxy:
    proxy = IngressProxy(restate.ingress_url, **kwargs)  # type: ignore[arg-type]
    proxy.start()
    proxies.append(proxy)
    return proxy


async def deliver(
    broker: Broker, bridges: BridgeFactory, client: Client, url: str, restate_extra: str
) -> BridgeProcess:
    topic, key = unique("tls"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic])
    await produce(
        broker.bootstrap_servers, topic, [Message(key.encode(), b"1"), Message(key.encode(), b"2")]
    )
    bridge = bridges.start(
        recorder(topic), group_id=unique("g"), ingress_url=url, restate_extra=restate_extra
    )
    await until(recorded(client, key), lambda v: v == [1, 2], "both records delivered")
    return bridge


@pytest.mark.parametrize("client_certificates", [False, True], ids=["ca", "mtls"])
async def test_the_bridge_delivers_to_an_https_ingress_with_a_custom_ca(
    broker: Broker,
    bridges: BridgeFactory,
    restate: RestateServer,
    client: Client,
    tls: Tls,
    proxies: list[IngressProxy],
    client_certificates: bool,
) -> None:
    context = tls.server_context(client_certificates=client_certificates)
    proxy = start_proxy(proxies, restate, ssl_context=context)
    assert proxy.url.startswith("https://localhost:")
    extra = f'ca_file = "{tls.ca_file}"\n'
    if client_certificates:
        extra += f'cert_file = "{tls.cert_file}"\nkey_file = "{tls.key_file}"\n'
    await deliver(broker, bridges, client, proxy.url, extra)
    assert {s.status for s in proxy.snapshot()} == {202}


async def not_ready(
    bridges: BridgeFactory, proxy: IngressProxy, ca_file: Path, detail: str
) -> tuple[int, dict[str, str]]:
    """Start a bridge trusting ``ca_file`` behind ``proxy``; its ``/readyz`` once it names
    ``detail``."""
    bridge = bridges.start(
        recorder(unique("t")),
        group_id=unique("g"),
        ingress_url=proxy.url,
        wait_ready=False,
        restate_extra=f'ca_file = "{ca_file}"\n',
    )
    return await until(
        bridge.readyz, lambda r: detail in r[1].get("detail", ""), f"/readyz naming {detail}", 30
    )


async def test_an_untrusted_ingress_certificate_keeps_the_bridge_not_ready_saying_why(
    broker: Broker,
    bridges: BridgeFactory,
    restate: RestateServer,
    tls: Tls,
    proxies: list[IngressProxy],
) -> None:
    proxy = start_proxy(proxies, restate, ssl_context=tls.server_context(client_certificates=False))
    status, body = await not_ready(bridges, proxy, tls.other_ca_file, "TLS")
    assert status == 503
    assert "TLS: the ingress's certificate is not trusted" in body["detail"]
    assert "(unable to get local issuer certificate)" in body["detail"]
    assert proxy.snapshot() == []


async def test_a_missing_client_certificate_keeps_the_bridge_not_ready(
    broker: Broker,
    bridges: BridgeFactory,
    restate: RestateServer,
    tls: Tls,
    proxies: list[IngressProxy],
) -> None:
    proxy = start_proxy(proxies, restate, ssl_context=tls.server_context(client_certificates=True))
    # TLS 1.3 refuses a missing client certificate after the client's side of the handshake:
    # the client sees the alert or only a reset, depending on timing
    status, body = await not_ready(bridges, proxy, tls.ca_file, "GET /restate/health")
    assert status == 503
    assert "Restate ingress unreachable" in body["detail"]
    assert proxy.snapshot() == []


async def test_a_rotated_token_file_takes_effect_without_a_restart_and_loses_nothing(
    broker: Broker,
    bridges: BridgeFactory,
    restate: RestateServer,
    client: Client,
    proxies: list[IngressProxy],
    tmp_path: Path,
) -> None:
    old, new = "old-token-" + unique("t"), "new-token-" + unique("t")
    token_file = tmp_path / "token"
    token_file.write_text(old + "\n")
    proxy = start_proxy(proxies, restate, tokens={old})
    topic, key = unique("rot"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic])
    bridge = bridges.start(
        recorder(topic),
        group_id=unique("g"),
        ingress_url=proxy.url,
        restate_extra=f'token_file = "{token_file}"\n',
    )
    values = list(range(60))

    async def produce_slowly() -> None:
        for i in range(0, len(values), 3):
            batch = [Message(key.encode(), str(v).encode()) for v in values[i : i + 3]]
            await produce(broker.bootstrap_servers, topic, batch)
            await asyncio.sleep(0.1)

    producing = asyncio.create_task(produce_slowly())
    await until(recorded(client, key), lambda v: len(v) >= 6, "the first records delivered")
    # the server side switches first and strictly: the old token is refused at once
    proxy.tokens = {new}
    token_file.write_text(new + "\n")
    await producing
    await until(recorded(client, key), lambda v: v == values, "every record, in order", 60)
    log = bridge.log()
    assert f"ingress token reloaded from {token_file}" in log
    assert old not in log
    assert new not in log
    assert bridge.value("restate_bridge_messages_total", outcome="dead_lettered") == 0
    accepted = proxy.answered(202)
    assert {s.headers["authorization"] for s in accepted} == {f"Bearer {old}", f"Bearer {new}"}
    assert accepted[-1].headers["authorization"] == f"Bearer {new}"
    # the window between the switch and the reload was real: the old token was refused, retried
    assert f"Bearer {old}" in proxy.refused_tokens


async def test_a_forwarded_authorization_header_never_replaces_the_bridges_token(
    broker: Broker,
    bridges: BridgeFactory,
    restate: RestateServer,
    client: Client,
    proxies: list[IngressProxy],
    tmp_path: Path,
) -> None:
    token = "bridge-token-" + unique("t")
    token_file = tmp_path / "token"
    token_file.write_text(token)
    proxy = start_proxy(proxies, restate, tokens={token})
    topic, key = unique("hdr"), unique("k")
    await create_topics(broker.bootstrap_servers, [topic])
    # a route that forwards every header it may: authorization is not among them
    await produce(
        broker.bootstrap_servers,
        topic,
        [
            Message(
                key.encode(),
                b"1",
                headers=[("authorization", b"Bearer from-the-record"), ("x-tenant", b"acme")],
            )
        ],
    )
    bridge = bridges.start(
        recorder(topic, headers=["x-tenant"]),
        group_id=unique("g"),
        ingress_url=proxy.url,
        restate_extra=f'token_file = "{token_file}"\n',
    )
    await until(recorded(client, key), lambda v: v == [1], "the record delivered")
    [send] = proxy.answered(202)
    assert send.headers["authorization"] == f"Bearer {token}"
    assert send.headers["x-tenant"] == "acme"
    assert proxy.refused_tokens == []
    assert "from-the-record" not in str(proxy.snapshot())
    assert bridge.value("restate_bridge_messages_total", outcome="accepted") == 1
