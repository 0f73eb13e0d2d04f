"""An asyncio client of a schema registry's Confluent API: schemas by id, parsed once, cached.

``GET {url}/schemas/ids/{id}`` gives the writer's schema, its ``schemaType`` (``AVRO`` when
absent, ``PROTOBUF``, ``JSON``) and its references (``.proto`` imports, Avro named types), each
fetched with ``GET {url}/subjects/{subject}/versions/{version}``. A schema is fetched and parsed
once per id; concurrent look-ups of one id share one request. Errors, by what the caller does::

    RegistryError
    ├── RegistryUnavailable   retryable: refused, timeout, 5xx, 429, 401/403, an answer that is
    │                         not the Confluent API; the record waits, never a dead letter
    └── SchemaUnusable        not retryable, cached for the id: 404 (error code 40403/40401/
                              40402), a schema that does not parse or compile; a dead letter
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiokafka.errors import KafkaError

from .codec import FORMAT_OF, BadSchema, Codec, SchemaType

log = logging.getLogger(__name__)

MAX_REFERENCE_DEPTH = 16
_NOT_FOUND_CODES = frozenset({40401, 40402, 40403})
"""Confluent's "subject / version / schema not found": a 404 without one of these is a wrong URL
(or a proxy), not an unknown schema, and must not dead-letter records."""


class RegistryError(Exception):
    """A schema could not be had from the registry."""

    retryable = False


class RegistryUnavailable(RegistryError):
    """The registry cannot answer right now (or not as a schema registry): retry."""

    retryable = True


class SchemaUnusable(RegistryError):
    """The id is unknown, or its schema cannot be used: records written with it are dead
    letters. ``reason`` is the metric label (``unknown_schema`` or ``bad_schema``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    url: str
    timeout: float = 10.0
    username: str | None = None
    password: str | None = None
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None
    validate_json: bool = False
    bearer: Callable[[], Awaitable[str]] | None = None
    """A token asked for each request (the Kafka login's, with ``kafka_oauth_token``)."""

    def __repr__(self) -> str:  # credentials stay out of every repr
        return f"RegistrySettings(url={self.url!r})"


CodecFactory = Callable[[SchemaType, str, list[tuple[str, str]], int], Awaitable[Codec]]
"""``(schema type, text, references as (name, text) dependencies first, id)`` -> an awaitable
codec; the default one builds the format modules' codecs."""


class SchemaRegistry:
    """Schemas by id. ``lookup`` is synchronous and only reads the cache; ``fetch`` fills it."""

    def __init__(
        self,
        settings: RegistrySettings,
        *,
        on_request: Callable[[str], None] = lambda result: None,
        codec_factory: CodecFactory | None = None,
    ) -> None:
        self.settings = settings
        self._base = settings.url.rstrip("/")
        self._on_request = on_request
        self._codec_factory = codec_factory or functools.partial(
            build_codec, validate_json=settings.validate_json
        )
        self._codecs: dict[int, Codec | SchemaUnusable] = {}
        self._inflight: dict[int, asyncio.Task[Codec]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> SchemaRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel look-ups under way and close the connections. Safe to call twice."""
        self._closed = True
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the schema registry client is closed")
        if self._session is None:
            s = self.settings
            headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
            if s.token is not None:
                headers["Authorization"] = f"Bearer {s.token}"
            if s.username is not None:
                pair = f"{s.username}:{s.password or ''}".encode()
                headers["Authorization"] = f"Basic {base64.b64encode(pair).decode('ascii')}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=s.timeout),
                connector=aiohttp.TCPConnector(ssl=s.ssl_context or True, limit=16),
            )
        return self._session

    # -- look-ups -------------------------------------------------------------------------

    def lookup(self, schema_id: int) -> Codec | SchemaUnusable | None:
        """The cached codec or failure of ``schema_id``; ``None`` when not fetched yet."""
        return self._codecs.get(schema_id)

    async def fetch(self, schema_id: int) -> Codec:
        """The codec of ``schema_id``, fetched and parsed at most once; concurrent callers share
        one request. Raises :class:`SchemaUnusable` (cached) or :class:`RegistryUnavailable`."""
        cached = self._codecs.get(schema_id)
        if cached is not None:
            if isinstance(cached, SchemaUnusable):
                raise cached
            return cached
        task = self._inflight.get(schema_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(schema_id))
            self._inflight[schema_id] = task
            task.add_done_callback(functools.partial(self._loaded, schema_id))
        return await asyncio.shield(task)

    def _loaded(self, schema_id: int, task: asyncio.Task[Codec]) -> None:
        self._inflight.pop(schema_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have been cancelled meanwhile

    async def _load(self, schema_id: int) -> Codec:
        try:
            doc = await self._get(f"/schemas/ids/{schema_id}", f"schema id {schema_id}")
            schema_type = _schema_type(doc, f"schema id {schema_id}")
            references = await self._references(doc, schema_type, set(), 0)
            text = doc.get("schema")
            if not isinstance(text, str):
                raise SchemaUnusable(
                    f"schema id {schema_id}: the answer has no schema text", "bad_schema"
                )
            try:
                codec: Codec = await self._codec_factory(schema_type, text, references, schema_id)
            except BadSchema as exc:
                raise SchemaUnusable(f"schema id {schema_id}: {exc}", "bad_schema") from None
        except SchemaUnusable as exc:
            self._codecs[schema_id] = exc
            raise
        self._codecs[schema_id] = codec
        log.info("schema id %d loaded (%s)", schema_id, FORMAT_OF.get(schema_type, schema_type))
        return codec

    async def _references(
        self, doc: dict[str, Any], schema_type: str, seen: set[tuple[str, int]], depth: int
    ) -> list[tuple[str, str]]:
        """The referenced schemas' (name, text), dependencies before their dependents."""
        refs = doc.get("references") or []
        if not isinstance(refs, list):
            raise SchemaUnusable("the schema's references are not a list", "bad_schema")
        if refs and depth >= MAX_REFERENCE_DEPTH:
            raise SchemaUnusable(
                f"schema references nest deeper than {MAX_REFERENCE_DEPTH}", "bad_schema"
            )
        out: list[tuple[str, str]] = []
        for ref in refs:
            if not isinstance(ref, dict):
                raise SchemaUnusable(f"bad schema reference {ref!r:.100}", "bad_schema")
            name, subject, version = ref.get("name"), ref.get("subject"), ref.get("version")
            if not (
                isinstance(name, str) and isinstance(subject, str) and isinstance(version, int)
            ):
                raise SchemaUnusable(f"bad schema reference {ref!r:.100}", "bad_schema")
            if (subject, version) in seen:
                continue
            seen.add((subject, version))
            path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions/{version}"
            found = await self._get(path, f"reference {name!r} ({subject} v{version})")
            text = found.get("schema")
            if not isinstance(text, str):
                raise SchemaUnusable(f"reference {name!r} has no schema text", "bad_schema")
            out += await self._references(found, schema_type, seen, depth + 1)
            out.append((name, text))
        return out

    async def _get(self, path: str, what: str) -> dict[str, Any]:
        """One GET; every failure translated here, and only here, into a :class:`RegistryError`."""
        url = self._base + path
        try:
            headers = None
            if self.settings.bearer is not None:
                headers = {"Authorization": f"Bearer {await self.settings.bearer()}"}
            async with self._http().get(url, headers=headers) as resp:
                body = await resp.read()
                status = resp.status
        except TimeoutError:
            self._on_request("error")
            raise RegistryUnavailable(
                f"no answer within {self.settings.timeout:g}s from {self._base}"
            ) from None
        except (aiohttp.ClientError, KafkaError) as exc:  # KafkaError: no Kafka token now
            self._on_request("error")
            raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if status == 404:
            code = doc.get("error_code") if isinstance(doc, dict) else None
            if code in _NOT_FOUND_CODES:
                self._on_request("not_found")
                raise SchemaUnusable(f"{what} is not in the schema registry", "unknown_schema")
            self._on_request("error")
            raise RegistryUnavailable(
                f"{url} answers 404 without a schema registry error code: is [schema_registry] "
                "url the API's base (for Apicurio .../apis/ccompat/v7)?"
            )
        if status != 200 or not isinstance(doc, dict):
            self._on_request("error")
            detail = f"HTTP {status}" if status != 200 else "an answer that is not a JSON object"
            if status in (401, 403):
                detail += " (check the [schema_registry] credentials)"
            raise RegistryUnavailable(f"{what}: {detail} from {self._base}")
        self._on_request("ok")
        return doc


def _schema_type(doc: dict[str, Any], what: str) -> SchemaType:
    kind = doc.get("schemaType", "AVRO")
    if kind not in ("AVRO", "PROTOBUF", "JSON"):
        raise SchemaUnusable(f"{what} has the unknown schemaType {kind!r:.40}", "bad_schema")
    return kind  # type: ignore[no-any-return]


async def build_codec(
    schema_type: SchemaType,
    text: str,
    references: list[tuple[str, str]],
    schema_id: int,
    *,
    validate_json: bool = False,
) -> Codec:
    """The codec of one schema (imports kept local: each format's library loads on first use)."""
    if schema_type == "AVRO":
        from .avro import AvroCodec

        return AvroCodec(text, [t for _, t in references])
    if schema_type == "PROTOBUF":
        from .protobuf import compile_protobuf

        return await compile_protobuf(text, dict(references), schema_id)
    from .json_schema import JsonSchemaCodec

    return JsonSchemaCodec(text, validate=validate_json)
