"""The decoding stage between fetching and planning: framed keys and values become JSON data.

The router is pure and synchronous, so the I/O happens here, before it: the worker hands a fetched
batch to :meth:`Decoder.prepare`, which fetches the schemas of its framed fields that are not
cached yet (one request per id, concurrent look-ups shared), then :meth:`Decoder.decode` turns each
record into one carrying :class:`bridge.core.record.Decoded` values, from the cache alone. A record
whose schema could not be had because the registry is unreachable is not decoded (``None``): the
worker leaves it, and everything after it in its partition, in Kafka and pauses fetching until
:meth:`Decoder.recover_forever` reaches the registry again. Only records that can never be read
(not framed, an unknown id, a payload that does not match its schema) carry an error, which the
route turns into a dead letter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..core.backoff import Backoff
from ..core.record import FRAMED_FORMATS, Decoded, Record
from .codec import FORMAT_OF, PayloadError
from .framing import FrameError, parse_frame
from .registry import RegistryUnavailable, SchemaRegistry, SchemaUnusable

log = logging.getLogger(__name__)

FIELDS = ("value", "key")
UNAVAILABLE = None
"""What :meth:`Decoder.decode` returns for a record that must wait for the registry."""


class Decoder:
    def __init__(
        self,
        formats: Callable[[str], tuple[frozenset[str], frozenset[str]]],
        registry: SchemaRegistry,
        *,
        on_failure: Callable[[str, str, str, str], None] = lambda *_: None,
        on_cache_hit: Callable[[], None] = lambda: None,
        on_state: Callable[[bool], None] = lambda up: None,
        backoff: Backoff | None = None,
    ) -> None:
        """``formats(topic)`` gives the framed formats the topic's routes read its value and its
        key in; ``on_failure(topic, field, format, reason)`` counts an undecodable field."""
        self._formats = formats
        self.registry = registry
        self._on_failure = on_failure
        self._on_cache_hit = on_cache_hit
        self._on_state = on_state
        on_state(True)
        self._backoff = backoff or Backoff()
        self._waiting: set[int] = set()
        """Ids a transient failure left unfetched; retried by :meth:`recover_forever`."""
        self._down = asyncio.Event()
        self.reason = ""

    @property
    def up(self) -> bool:
        """False while a schema a fetched record needs could not be had (registry unreachable)."""
        return not self._down.is_set()

    # -- fetching -------------------------------------------------------------------------

    async def prepare(self, records: Iterable[Record]) -> None:
        """Fetch the schemas these records' framed fields need that are not cached yet."""
        ids: set[int] = set()
        for record in records:
            for _, data in self._framed(record):
                try:
                    schema_id = parse_frame(data).schema_id
                except FrameError:
                    continue
                if self.registry.lookup(schema_id) is None:
                    ids.add(schema_id)
        if ids:
            await asyncio.gather(*(self._fetch(i) for i in ids))

    async def _fetch(self, schema_id: int) -> bool:
        """Fetch one id; True when the registry answered (with the schema or a final no)."""
        try:
            await self.registry.fetch(schema_id)
        except RegistryUnavailable as exc:
            self._waiting.add(schema_id)
            self._mark_down(f"schema id {schema_id}: {exc}")
            return False
        except SchemaUnusable as exc:
            log.warning("%s", exc)
        self._waiting.discard(schema_id)
        return True

    def _mark_down(self, reason: str) -> None:
        self.reason = reason
        if not self._down.is_set():
            log.warning("schema registry unreachable (%s): pausing fetches", reason)
            self._down.set()
            self._on_state(False)

    async def recover_forever(self) -> None:
        """While the registry is down, retry the ids records wait for, with backoff; mark it up
        once every one was answered."""
        while True:
            await self._down.wait()
            attempt = 0
            while self._down.is_set():
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1
                results = await asyncio.gather(*(self._fetch(i) for i in sorted(self._waiting)))
                if all(results):
                    log.info("schema registry is reachable again")
                    self._down.clear()
                    self._on_state(True)

    def use_formats(self, formats: Callable[[str], tuple[frozenset[str], frozenset[str]]]) -> None:
        """Read the framed fields ``formats`` names from the next record on (a reload's routes);
        the cached schemas stay."""
        self._formats = formats

    # -- decoding -------------------------------------------------------------------------

    def _framed(self, record: Record) -> list[tuple[str, bytes]]:
        value_formats, key_formats = self._formats(record.topic)
        out: list[tuple[str, bytes]] = []
        if value_formats and record.value is not None:
            out.append(("value", record.value))
        if key_formats and record.key is not None:
            out.append(("key", record.key))
        return out

    def decode(self, record: Record) -> Record | None:
        """``record`` with its framed fields decoded, from the cache alone; ``None`` when a
        schema it needs is not cached (the registry was unreachable): it must wait."""
        framed = self._framed(record)
        if not framed:
            return record
        value_formats, key_formats = self._formats(record.topic)
        decoded: dict[str, Decoded] = {}
        for field, data in framed:
            formats = value_formats if field == "value" else key_formats
            result = self._decode(record.topic, field, data, formats)
            if result is UNAVAILABLE:
                return None
            decoded[field] = result
        return dataclasses.replace(
            record, key_data=decoded.get("key"), value_data=decoded.get("value")
        )

    def _decode(
        self, topic: str, field: str, data: bytes, formats: frozenset[str]
    ) -> Decoded | None:
        declared = min(formats)  # the label when the data says nothing (one format is usual)
        try:
            frame = parse_frame(data)
        except FrameError as exc:
            self._on_failure(topic, field, declared, "no_magic_byte")
            return Decoded(error=str(exc))
        codec = self.registry.lookup(frame.schema_id)
        if codec is None:
            return UNAVAILABLE
        if isinstance(codec, SchemaUnusable):
            self._on_failure(topic, field, declared, codec.reason)
            return Decoded(schema_id=frame.schema_id, error=str(codec))
        self._on_cache_hit()
        schema_type, fmt = codec.schema_type, FORMAT_OF[codec.schema_type]
        if fmt not in formats:
            self._on_failure(topic, field, fmt, "wrong_format")
            return Decoded(schema_type, frame.schema_id)  # the route says which format it wanted
        try:
            result: Any = codec.decode(frame.payload)
        except PayloadError as exc:
            self._on_failure(topic, field, fmt, "bad_payload")
            return Decoded(
                schema_type,
                frame.schema_id,
                error=f"does not match its {fmt} schema (id {frame.schema_id}): {exc}",
            )
        return Decoded(schema_type, frame.schema_id, result)


def route_formats(
    routes: Sequence[Any],
) -> Callable[[str], tuple[frozenset[str], frozenset[str]]]:
    """``formats(topic)`` for :class:`Decoder`, from the routes' configs (cached per topic)."""
    cache: dict[str, tuple[frozenset[str], frozenset[str]]] = {}

    def formats(topic: str) -> tuple[frozenset[str], frozenset[str]]:
        found = cache.get(topic)
        if found is None:
            matching = [r for r in routes if r.matches_topic(topic)]
            found = (
                frozenset(r.value_format for r in matching if r.value_format in FRAMED_FORMATS),
                frozenset(r.key_format for r in matching if r.key_format in FRAMED_FORMATS),
            )
            cache[topic] = found
        return found

    return formats
