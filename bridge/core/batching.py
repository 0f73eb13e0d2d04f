"""Batch routes, the pure part: a record as a JSON item, and the buffers that gather items into
batches. No I/O, no asyncio, no clock reads (``now`` is passed in).

A batch route (``batch = { max_records, max_bytes, max_wait }``) sends one invocation per batch,
its body a JSON array of items::

    {"topic": "orders", "partition": 0, "offset": 42, "timestamp": 1700000000000,
     "key": "customer-1", "headers": {"trace": "abc"}, "value": {"amount": 5}}

- ``key``: the key as text when it is UTF-8, else base64 with ``"key_base64": true``; ``null``
  without a key;
- ``headers``: an object of text values (the last one wins when a name repeats); a value that is
  not UTF-8 is base64 and its name is listed in ``"headers_base64"``; a null header value is
  ``null``;
- ``value``: the JSON document when the value is JSON (its bytes as written, so integers of any
  size stay exact), the decoded data for a framed format (``avro``, ``protobuf``,
  ``json_schema``), else base64 with ``"value_base64": true``; ``null`` for a tombstone.

Buffers (:class:`Accumulator`) are kept per *group*: the dispatcher groups by route, partition,
and for objects by key, so a batch never spans partitions and an object's batch holds records of
one key in offset order. A buffer closes when it holds ``max_records`` items, when the next item
would take its body beyond ``max_bytes`` (a single larger item goes alone), or ``max_wait`` after
its first item arrived.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from ..config import BatchConfig
from .record import FRAMED_FORMATS, RecordView

T = TypeVar("T")

MAX_BATCH_IDEMPOTENCY_KEY = 512
"""Longer batch idempotency keys (a long or non-ASCII route name) name the route by a hash."""


def encode_item(view: RecordView) -> bytes:
    """The record of ``view`` as one JSON item of a batch (module docstring).

    Raises :class:`bridge.core.record.FieldError` when a framed value cannot be decoded (a
    poison)."""
    rec = view.record
    doc: dict[str, Any] = {
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
    }
    key = rec.key
    if key is None:
        doc["key"] = None
    else:
        try:
            doc["key"] = key.decode("utf-8")
        except UnicodeDecodeError:
            doc["key"] = base64.b64encode(key).decode("ascii")
            doc["key_base64"] = True
    headers: dict[str, str | None] = {}
    encoded: set[str] = set()
    for name, raw in rec.headers:
        encoded.discard(name)  # the last value of a repeated name wins
        if raw is None:
            headers[name] = None
            continue
        try:
            headers[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            headers[name] = base64.b64encode(raw).decode("ascii")
            encoded.add(name)
    doc["headers"] = headers
    if encoded:
        doc["headers_base64"] = sorted(encoded)
    value = rec.value
    if value is None:
        doc["value"] = None
    elif view.value_format in FRAMED_FORMATS:
        body = view.body()
        assert body is not None
        doc["value"] = orjson.Fragment(body)
    elif _is_json(value):
        doc["value"] = orjson.Fragment(value)
    else:
        doc["value"] = base64.b64encode(value).decode("ascii")
        doc["value_base64"] = True
    return orjson.dumps(doc)


def _is_json(value: bytes) -> bool:
    """Strict JSON (UTF-8, no NaN, one document) that can be embedded as it is."""
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


def batch_idempotency_key(
    route: str,
    topic: str,
    partition: int,
    first: int,
    last: int,
    members: Sequence[int] | None = None,
) -> str:
    """``{topic}-{partition}-{first}-{last}:{route}``: the same records, the same key. A batch
    that holds only some offsets of its range (``members``: a ``match`` or a key left the others
    out) adds ``~`` and a hash of its offsets, so that another batch over the same range (after
    a reload changed ``match``) never shares its key and is never taken for a duplicate. A route
    name that is not printable ASCII, or too long, is replaced by a hash of it."""
    coords = f"{topic}-{partition}-{first}-{last}"
    if members is not None and len(members) != last - first + 1:
        listed = ",".join(map(str, members)).encode("ascii")
        coords = f"{coords}~{hashlib.sha256(listed).hexdigest()[:16]}"
    idem = f"{coords}:{route}"
    if idem.isascii() and idem.isprintable() and len(idem) <= MAX_BATCH_IDEMPOTENCY_KEY:
        return idem
    digest = hashlib.sha256(route.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{coords}:sha256-{digest}"


@dataclass(slots=True)
class Batch(Generic[T]):
    """Items of one group, in the order added; ``tickets`` are the caller's, one per item."""

    group: Hashable
    route: str
    topic: str
    partition: int
    deadline: float
    """When it closes at the latest (monotonic seconds)."""
    tickets: list[T] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    size: int = 2
    """Bytes of its JSON body: ``[`` and ``]``, the items, the commas between them."""

    def __len__(self) -> int:
        return len(self.offsets)

    def idempotency_key(self) -> str:
        """Names the batch's records (:func:`batch_idempotency_key`)."""
        offsets = self.offsets
        return batch_idempotency_key(
            self.route, self.topic, self.partition, offsets[0], offsets[-1], offsets
        )


def batch_body(items: list[bytes]) -> bytes:
    """The JSON array of ``items``."""
    return b"[" + b",".join(items) + b"]"


class Accumulator(Generic[T]):
    """Open batches by group; :meth:`add` returns the batches that closed."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[Hashable, Batch[T]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, group: Hashable) -> bool:
        return group in self._open

    def add(
        self,
        group: Hashable,
        route: str,
        config: BatchConfig,
        topic: str,
        partition: int,
        offset: int,
        size: int,
        ticket: T,
        now: float,
    ) -> list[Batch[T]]:
        """Add an item of ``size`` bytes. Returns what closed: the group's open batch when the
        item does not fit in its bytes, and the batch holding the item when it is full."""
        closed: list[Batch[T]] = []
        batch = self._open.get(group)
        if batch is not None and batch.size + 1 + size > config.max_bytes:
            closed.append(self._open.pop(group))
            batch = None
        if batch is None:
            deadline = now + config.max_wait.total_seconds()
            batch = self._open[group] = Batch(group, route, topic, partition, deadline)
            batch.size += size
        else:
            batch.size += 1 + size
        batch.tickets.append(ticket)
        batch.offsets.append(offset)
        if len(batch.offsets) >= config.max_records or batch.size >= config.max_bytes:
            closed.append(self._open.pop(group))
        return closed

    def close(self, group: Hashable) -> Batch[T] | None:
        """Close and return the group's open batch, if any."""
        return self._open.pop(group, None)

    def next_deadline(self) -> float | None:
        return min((b.deadline for b in self._open.values()), default=None)

    def due(self, now: float) -> list[Batch[T]]:
        """Close and return the batches whose ``max_wait`` has passed, oldest first."""
        return self.take(lambda b: b.deadline <= now)

    def take(self, where: Callable[[Batch[T]], bool] | None = None) -> list[Batch[T]]:
        """Close and return every open batch (that ``where`` selects), oldest first."""
        found = [b for b in self._open.values() if where is None or where(b)]
        for batch in found:
            del self._open[batch.group]
        return sorted(found, key=lambda b: b.deadline)
