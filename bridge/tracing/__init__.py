"""OpenTelemetry spans of the bridge itself, an optional extra (``pip install
'restate-kafka-bridge[otel]'``).

This package's root imports nothing of OpenTelemetry, so ``check`` can say the extra is missing;
:mod:`bridge.tracing.spans` does, and is imported only when ``[tracing] spans = true``. The W3C
headers that travel without spans are :mod:`bridge.tracecontext`'s.
"""

from __future__ import annotations

import importlib.util

EXTRA_MODULES = {"opentelemetry.trace": "opentelemetry-api"}
"""Modules the spans need, with the package that brings each."""


def missing_extra() -> str | None:
    """The ``[otel]`` packages not installed, named for a message; None when all are."""
    missing = []
    for module, package in EXTRA_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(package)
    return ", ".join(missing) if missing else None


__all__ = ["EXTRA_MODULES", "missing_extra"]
