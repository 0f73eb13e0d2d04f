"""Optional extras: which of their packages are not installed, found without importing them."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping


def missing_packages(modules: Mapping[str, str]) -> str | None:
    """The packages (``modules``: a module to find -> the package that brings it) whose module is
    not installed, comma-separated for a message; ``None`` when every one is."""
    missing = []
    for module, package in modules.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a broken spec
            found = False
        if not found:
            missing.append(package)
    return ", ".join(missing) if missing else None
