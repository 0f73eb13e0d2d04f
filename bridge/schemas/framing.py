"""The Confluent wire format of a framed key or value. Pure.

::

    byte 0       magic byte 0
    bytes 1-4    the schema id, big-endian
    (Protobuf)   the message indexes: a zig-zag varint count, then that many zig-zag varints,
                 the path to the message type in the .proto file (first a top-level message,
                 then nested ones); the single byte 0 stands for [0], the file's first message
    the rest     the payload, encoded with that schema
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = 0
HEADER_SIZE = 5
MAX_INDEXES = 64
"""More message indexes than this is not a real nesting depth but a corrupt frame."""


class FrameError(ValueError):
    """The bytes are not a framed payload; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Frame:
    schema_id: int
    payload: memoryview


def parse_frame(data: bytes) -> Frame:
    """Split ``data`` into the schema id and the payload; raise :class:`FrameError` when it is
    not framed (too short, or no magic byte)."""
    if len(data) < HEADER_SIZE:
        raise FrameError(
            f"{len(data)} bytes are too short for a schema registry frame "
            "(magic byte 0 and a 4-byte schema id)"
        )
    if data[0] != MAGIC:
        raise FrameError(
            f"no magic byte: the first byte is {data[0]:#04x}, a schema registry serializer "
            "writes 0x00 (is the topic's data plain JSON? set the route's format)"
        )
    return Frame(int.from_bytes(data[1:5], "big"), memoryview(data)[HEADER_SIZE:])


def frame(schema_id: int, payload: bytes, indexes: list[int] | None = None) -> bytes:
    """``payload`` framed as a Confluent serializer does (with ``indexes`` for Protobuf)."""
    head = bytes([MAGIC]) + schema_id.to_bytes(4, "big")
    if indexes is None:
        return head + payload
    return head + encode_indexes(indexes) + payload


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def encode_indexes(indexes: list[int]) -> bytes:
    """The message-index array as Confluent's serializer writes it."""
    if indexes == [0]:
        return b"\x00"
    return b"".join(_varint(_zigzag(n)) for n in (len(indexes), *indexes))


def read_indexes(payload: memoryview) -> tuple[list[int], memoryview]:
    """The message indexes at the start of a Protobuf payload, and the message bytes after them.
    An empty array (the single byte 0) means ``[0]``."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= len(payload):
                raise FrameError("the Protobuf message indexes are cut short")
            byte = payload[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise FrameError("a Protobuf message index is not a valid varint")
        return (result >> 1) ^ -(result & 1)  # zig-zag

    count = varint()
    if count == 0:
        return [0], payload[pos:]
    if count < 0 or count > MAX_INDEXES:
        raise FrameError(f"bad Protobuf message-index count {count}")
    indexes = [varint() for _ in range(count)]
    if any(i < 0 for i in indexes):
        raise FrameError(f"negative Protobuf message index in {indexes}")
    return indexes, payload[pos:]
