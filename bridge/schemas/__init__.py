"""Schema Registry formats: framed keys and values decoded into JSON data before planning.

The libraries (``fastavro``, ``protobuf``, ``grpcio-tools``, ``jsonschema``) come with the
``[schemas]`` extra; this package's ``__init__`` imports none of them, so a JSON-only bridge runs
without them and ``check`` says what is missing.
"""

from __future__ import annotations

from ..core.record import FRAMED_FORMATS
from ..extras import missing_packages

EXTRA_MODULES = {
    "fastavro": "fastavro",
    "google.protobuf": "protobuf",
    "grpc_tools": "grpcio-tools",
    "jsonschema": "jsonschema",
}


def missing_extra() -> str | None:
    """The ``[schemas]`` packages not installed, named for a message; None when all are."""
    return missing_packages(EXTRA_MODULES)


__all__ = ["EXTRA_MODULES", "FRAMED_FORMATS", "missing_extra"]
