"""Protobuf: a registered ``.proto`` text compiled into descriptors, payloads read as canonical
proto3 JSON.

The ``.proto`` text (and the files it imports, from the schema's references) is compiled once per
schema id by ``protoc`` from ``grpcio-tools``, in a child process (its errors are captured, and a
crash cannot take the bridge with it). The well-known types (``google/protobuf/*.proto``) come
with ``grpcio-tools``.

The mapping is ``google.protobuf.json_format.MessageToDict``, the canonical proto3 JSON mapping:
field names in lowerCamelCase (their ``json_name``), 64-bit integers as strings, enums by name,
bytes as base64, ``Timestamp`` / ``Duration`` as RFC 3339 strings / ``"1.5s"``, ``Struct`` as
the object it holds, wrappers as their value. Fields without presence are written also when they
hold their default (``0``, ``""``, the first enum value), so a template never misses them.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError

from .codec import BadSchema, PayloadError, SchemaType
from .framing import FrameError, read_indexes

COMPILE_TIMEOUT = 60.0
_INCLUDE = str(importlib.resources.files("grpc_tools") / "_proto")


class ProtobufCodec:
    schema_type: SchemaType = "PROTOBUF"

    def __init__(self, files: descriptor_pb2.FileDescriptorSet, main: str) -> None:
        self._pool = descriptor_pool.DescriptorPool()
        try:
            for proto in files.file:  # --include_imports lists dependencies first
                self._pool.Add(proto)
            found = self._pool.FindFileByName(main)
            self._top = [
                self._pool.FindMessageTypeByName(_qualified(found.package, m.name))
                for m in next(f for f in files.file if f.name == main).message_type
            ]
        except Exception as exc:  # TypeError, KeyError: descriptors the pool refuses
            raise BadSchema(f"the compiled descriptors do not load: {exc}") from None
        self._classes: dict[tuple[int, ...], Any] = {}

    def message_type(self, indexes: list[int]) -> Descriptor:
        """The message the indexes name: a top-level message, then nested ones."""
        if not self._top:
            raise PayloadError("the schema defines no message")
        if indexes[0] >= len(self._top):
            raise PayloadError(
                f"message index {indexes[0]} but the schema has {len(self._top)} top-level messages"
            )
        desc = self._top[indexes[0]]
        for i in indexes[1:]:
            nested = desc.nested_types
            if i >= len(nested):
                raise PayloadError(f"message {desc.full_name} has no nested message {i}")
            desc = nested[i]
        return desc

    def message_class(self, indexes: list[int]) -> Any:
        """The generated class of the message the indexes name (made once)."""
        key = tuple(indexes)
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = message_factory.GetMessageClass(self.message_type(indexes))
        return cls

    def decode(self, payload: memoryview) -> Any:
        try:
            indexes, body = read_indexes(payload)
        except FrameError as exc:
            raise PayloadError(str(exc)) from None
        cls = self.message_class(indexes)
        message = cls()
        try:
            message.ParseFromString(bytes(body))
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise PayloadError(f"not a valid {cls.DESCRIPTOR.full_name}: {exc}") from None
        try:
            return MessageToDict(
                message,
                always_print_fields_with_no_presence=True,
                descriptor_pool=self._pool,
            )
        except Exception as exc:  # json_format.Error, or an Any of an unknown type
            raise PayloadError(f"{cls.DESCRIPTOR.full_name} has no JSON form: {exc}") from None


def _qualified(package: str, name: str) -> str:
    return f"{package}.{name}" if package else name


async def compile_protobuf(text: str, imports: dict[str, str], schema_id: int) -> ProtobufCodec:
    """Compile ``text`` (with ``imports``: file name -> ``.proto`` text) into a codec; raises
    :class:`BadSchema` with protoc's message when it does not compile."""
    main = f"registry_schema_{schema_id}.proto"
    with tempfile.TemporaryDirectory(prefix="bridge-proto-") as tmp:
        root = Path(tmp) / "src"
        for name, source in {**imports, main: text}.items():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise BadSchema(f"reference name {name!r} is not a relative .proto path")
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source, encoding="utf-8")
        out = Path(tmp) / "set.pb"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{_INCLUDE}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            main,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), COMPILE_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BadSchema(f"protoc did not finish within {COMPILE_TIMEOUT:.0f}s") from None
        if proc.returncode != 0:
            message = err.decode("utf-8", "replace").strip().replace(str(root) + "/", "")
            raise BadSchema(f"the .proto does not compile: {message[:500]}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return ProtobufCodec(files, main)
