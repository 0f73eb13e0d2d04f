"""bridge.schemas.registry and .decoder against an in-process fake of the Confluent API."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import fastavro
import pytest
from aiohttp import web

from bridge.core.backoff import Backoff
from bridge.core.record import Decoded, Record
from bridge.schemas.decoder import Decoder
from bridge.schemas.framing import frame
from bridge.schemas.registry import (
    RegistrySettings,
    RegistryUnavailable,
    SchemaRegistry,
    SchemaUnusable,
)

AVRO = {"type": "record", "name": "A", "fields": [{"name": "a", "type": "int"}]}


def avro(datum: dict[str, Any], schema: dict[str, Any] = AVRO) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return out.getvalue()


@dataclass
class FakeRegistry:
    """Schemas by id and subject versions; counts requests; can fail or hold answers."""

    schemas: dict[int, dict[str, Any]] = field(default_factory=dict)
    versions: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    status: int | None = None
    """Answer every request with this status (500, 401, ...) while set."""
    hold: asyncio.Event | None = None
    url: str = ""

    async def by_id(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        self.headers.append(dict(request.headers))
        if self.hold is not None:
            await self.hold.wait()
        if self.status is not None:
            return web.json_response({"error_code": 50001}, status=self.status)
        found = self.schemas.get(int(request.match_info["id"]))
        if found is None:
            return web.json_response({"error_code": 40403, "message": "not found"}, status=404)
        return web.json_response(found)

    async def version(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        key = (request.match_info["subject"], int(request.match_info["version"]))
        found = self.versions.get(key)
        if found is None:
            return web.json_response({"error_code": 40402}, status=404)
        return web.json_response(found)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRegistry]:
    registry = FakeRegistry()
    app = web.Application()
    app.router.add_get("/api/schemas/ids/{id}", registry.by_id)
    app.router.add_get("/api/subjects/{subject}/versions/{version}", registry.version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    registry.url = f"http://127.0.0.1:{port}/api"
    yield registry
    await runner.cleanup()


def client(fake: FakeRegistry, **settings: Any) -> SchemaRegistry:
    results: list[str] = []
    registry = SchemaRegistry(RegistrySettings(fake.url, **settings), on_request=results.append)
    registry.results = results  # type: ignore[attr-defined]
    return registry


async def test_concurrent_look_ups_of_one_id_share_one_request(fake: FakeRegistry) -> None:
    fake.schemas[1] = {"schema": json.dumps(AVRO)}
    fake.hold = asyncio.Event()
    async with client(fake) as registry:
        waiting = [asyncio.create_task(registry.fetch(1)) for _ in range(20)]
        await asyncio.sleep(0.2)
        fake.hold.set()
        codecs = await asyncio.gather(*waiting)
        assert len({id(c) for c in codecs}) == 1
        assert fake.requests == ["/api/schemas/ids/1"]
        await registry.fetch(1)  # cached
        assert registry.lookup(1) is codecs[0]
        assert fake.requests == ["/api/schemas/ids/1"]
        assert registry.results == ["ok"]  # type: ignore[attr-defined]


async def test_unknown_id_is_final_and_cached(fake: FakeRegistry) -> None:
    async with client(fake) as registry:
        for _ in range(2):
            with pytest.raises(SchemaUnusable, match="schema id 9 is not in the schema registry"):
                await registry.fetch(9)
        assert fake.requests == ["/api/schemas/ids/9"]
        found = registry.lookup(9)
        assert isinstance(found, SchemaUnusable)
        assert found.reason == "unknown_schema"


async def test_a_schema_that_does_not_parse_is_final(fake: FakeRegistry) -> None:
    fake.schemas[2] = {"schema": '{"type": "nope"}'}
    fake.schemas[3] = {"schema": "x", "schemaType": "XML"}
    async with client(fake) as registry:
        with pytest.raises(SchemaUnusable, match="schema id 2: not a usable Avro schema"):
            await registry.fetch(2)
        with pytest.raises(SchemaUnusable, match="unknown schemaType 'XML'"):
            await registry.fetch(3)
        assert isinstance(registry.lookup(2), SchemaUnusable)


@pytest.mark.parametrize("status", [500, 503, 429, 401, 403])
async def test_errors_are_transient_and_not_cached(fake: FakeRegistry, status: int) -> None:
    fake.schemas[1] = {"schema": json.dumps(AVRO)}
    fake.status = status
    async with client(fake) as registry:
        with pytest.raises(RegistryUnavailable, match=f"HTTP {status}"):
            await registry.fetch(1)
        assert registry.lookup(1) is None
        fake.status = None
        await registry.fetch(1)
        assert registry.results == ["error", "ok"]  # type: ignore[attr-defined]


async def test_a_404_without_a_registry_error_code_is_a_wrong_url(fake: FakeRegistry) -> None:
    fake.schemas[1] = {"schema": json.dumps(AVRO)}
    registry = SchemaRegistry(RegistrySettings(fake.url.removesuffix("/api") + "/wrong"))
    async with registry:
        with pytest.raises(RegistryUnavailable, match=r"is \[schema_registry\] url the API's base"):
            await registry.fetch(1)
        assert registry.lookup(1) is None


async def test_an_unreachable_registry_is_transient() -> None:
    registry = SchemaRegistry(RegistrySettings("http://127.0.0.1:1/api", timeout=2))
    async with registry:
        with pytest.raises(RegistryUnavailable, match="ClientConnectorError"):
            await registry.fetch(1)


async def test_credentials_are_sent(fake: FakeRegistry) -> None:
    fake.schemas[1] = {"schema": json.dumps(AVRO)}
    async with client(fake, username="u", password="p") as registry:
        await registry.fetch(1)
    async with client(fake, token="t0k") as registry:
        await registry.fetch(1)
    assert [h.get("Authorization") for h in fake.headers] == ["Basic dTpw", "Bearer t0k"]
    shown = repr(RegistrySettings(fake.url, password="s3cret", token="t0k"))
    assert "s3cret" not in shown
    assert "t0k" not in shown


async def test_references_are_fetched_dependencies_first(fake: FakeRegistry) -> None:
    inner = {"type": "record", "name": "In", "fields": [{"name": "x", "type": "int"}]}
    mid = {"type": "record", "name": "Mid", "fields": [{"name": "i", "type": "In"}]}
    top = {"type": "record", "name": "Top", "fields": [{"name": "m", "type": "Mid"}]}
    fake.versions[("in", 1)] = {"schema": json.dumps(inner)}
    fake.versions[("mid", 2)] = {
        "schema": json.dumps(mid),
        "references": [{"name": "In", "subject": "in", "version": 1}],
    }
    fake.schemas[5] = {
        "schema": json.dumps(top),
        "references": [{"name": "Mid", "subject": "mid", "version": 2}],
    }
    full = {
        **top,
        "fields": [{"name": "m", "type": {**mid, "fields": [{"name": "i", "type": inner}]}}],
    }
    async with client(fake) as registry:
        codec = await registry.fetch(5)
        assert codec.decode(memoryview(avro({"m": {"i": {"x": 4}}}, full))) == {
            "m": {"i": {"x": 4}}
        }
    assert fake.requests == [
        "/api/schemas/ids/5",
        "/api/subjects/mid/versions/2",
        "/api/subjects/in/versions/1",
    ]


# -- the decoding stage -----------------------------------------------------------------------


def decoder(registry: SchemaRegistry, failures: list[tuple[str, ...]] | None = None) -> Decoder:
    def formats(topic: str) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset({"avro"}), frozenset({"avro"} if topic == "keyed" else set())

    return Decoder(
        formats,
        registry,
        on_failure=lambda *labels: (failures if failures is not None else []).append(labels),
        backoff=Backoff(0.01, 0.05),
    )


def rec(value: bytes | None, key: bytes | None = None, topic: str = "t") -> Record:
    return Record(topic, 0, 0, 0, key, value)


async def test_decoder_decodes_from_the_cache_after_prepare(fake: FakeRegistry) -> None:
    fake.schemas[1] = {"schema": json.dumps(AVRO)}
    fake.schemas[2] = {"schema": json.dumps({"type": "string"})}
    failures: list[tuple[str, ...]] = []
    async with client(fake) as registry:
        stage = decoder(registry, failures)
        records = [
            rec(
                frame(1, avro({"a": 5})), key=frame(2, avro("k", {"type": "string"})), topic="keyed"
            ),
            rec(b'{"a": 5}'),
            rec(frame(404, b"")),
            rec(frame(1, b"\xff")),
            rec(None),
        ]
        assert stage.decode(records[0]) is None  # not prepared: it would have to wait
        await stage.prepare(records)
        got = [stage.decode(r) for r in records]
    assert got[0] is not None
    assert (got[0].value_data, got[0].key_data) == (
        Decoded("AVRO", 1, {"a": 5}),
        Decoded("AVRO", 2, "k"),
    )
    assert got[1] is not None
    assert got[1].value_data is not None
    assert got[1].value_data.error is not None
    assert "no magic byte" in got[1].value_data.error
    assert got[2] is not None
    assert got[2].value_data == Decoded(
        schema_id=404, error="schema id 404 is not in the schema registry"
    )
    assert got[3] is not None
    assert got[3].value_data is not None
    assert (got[3].value_data.error or "").startswith("does not match its avro schema (id 1):")
    assert got[4] == records[4]
    assert failures == [
        ("t", "value", "avro", "no_magic_byte"),
        ("t", "value", "avro", "unknown_schema"),
        ("t", "value", "avro", "bad_payload"),
    ]
    assert sorted(fake.requests) == [
        "/api/schemas/ids/1",
        "/api/schemas/ids/2",
        "/api/schemas/ids/404",
    ]


async def test_decoder_waits_out_an_outage_and_recovers(fake: FakeRegistry) -> None:
    fake.schemas[1] = {"schema": json.dumps(AVRO)}
    fake.status = 503
    async with client(fake) as registry:
        stage = decoder(registry)
        record = rec(frame(1, avro({"a": 1})))
        await stage.prepare([record])
        assert not stage.up
        assert "schema id 1: " in stage.reason
        assert "HTTP 503" in stage.reason
        assert stage.decode(record) is None  # waits; never a dead letter
        recovering = asyncio.create_task(stage.recover_forever())
        try:
            await asyncio.sleep(0.3)
            assert not stage.up
            assert len(fake.requests) > 2
            fake.status = None
            for _ in range(100):
                if stage.up:
                    break
                await asyncio.sleep(0.02)
            assert stage.up
            decoded = stage.decode(record)
            assert decoded is not None
            assert decoded.value_data == Decoded("AVRO", 1, {"a": 1})
        finally:
            recovering.cancel()
            with pytest.raises(asyncio.CancelledError):
                await recovering
