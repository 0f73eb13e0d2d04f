"""Optional extras: which of their packages are not installed, found without importing them;
and user code the routing file names (``sasl_oauth_token_provider``), imported."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any


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


def load_provider(spec: str) -> Callable[[], Any]:
    """The factory ``package.module:factory`` names. Raises ``ValueError`` saying why not."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any error on import is theirs to see
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    factory: Any = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(f"{module_name!r} has no {attribute!r}")
    if not callable(factory):
        raise ValueError(f"{spec!r} is not callable")
    return factory  # type: ignore[no-any-return]
