"""OpenTelemetry spans of the bridge itself, an optional extra (``pip install
'restate-kafka-bridge[otel]'``).

This package's root imports nothing of OpenTelemetry, so ``check`` can say the extra is missing;
:mod:`bridge.tracing.spans` does, and is imported only when ``[tracing] spans = true``. The W3C
headers that travel without spans are :mod:`bridge.core.tracecontext`'s.
"""

from __future__ import annotations

from ..extras import missing_packages

EXTRA_MODULES = {"opentelemetry.trace": "opentelemetry-api"}
"""Modules the spans need, with the package that brings each."""


def missing_extra() -> str | None:
    """The ``[otel]`` packages not installed, named for a message; None when all are."""
    return missing_packages(EXTRA_MODULES)


__all__ = ["EXTRA_MODULES", "missing_extra"]
