"""Restate's rules for a scope and a limit key, checked before anything is sent.

Restate 1.7 (``restate_util_string::RestrictedValue``, ``restate_types::limit_key``) accepts a
scope made of 1 to 36 of the characters ``a-z A-Z 0-9 _ . -``, and a limit key of one or two such
components joined by ``/``; it answers 400 to anything else. The bridge checks the same rules on
every rendered value so that a bad one is a dead letter naming the route option, not a request
the ingress refuses. Pure.
"""

from __future__ import annotations

import re

MAX_COMPONENT = 36
"""Restate's ``RestrictedValue::MAX_LEN``: bytes of one scope or limit-key component."""
_COMPONENT = re.compile(r"[A-Za-z0-9_.\-]+")
RULE = f"1 to {MAX_COMPONENT} of the characters a-z A-Z 0-9 _ . -"


def component_problem(text: str) -> str | None:
    """What Restate would refuse in one scope or limit-key component, or ``None``."""
    if not text:
        return "is empty"
    if len(text) > MAX_COMPONENT:
        return f"is {len(text)} characters long; Restate allows {RULE}"
    if _COMPONENT.fullmatch(text) is None:
        return f"holds characters Restate refuses; it allows {RULE}"
    return None


def scope_problem(scope: str) -> str | None:
    """What is wrong with ``scope`` as a Restate scope, or ``None``."""
    wrong = component_problem(scope)
    return None if wrong is None else f"scope {_excerpt(scope)} {wrong}"


def limit_key_problem(limit_key: str) -> str | None:
    """What is wrong with ``limit_key`` (``level1`` or ``level1/level2``), or ``None``."""
    parts = limit_key.split("/")
    if len(parts) > 2:
        return (
            f"limit key {_excerpt(limit_key)} has {len(parts)} parts; Restate allows one or "
            "two joined by '/' (such as 'tenant' or 'tenant/user')"
        )
    for part in parts:
        wrong = component_problem(part)
        if wrong is not None:
            where = "" if len(parts) == 1 else f" (part {_excerpt(part)})"
            return f"limit key {_excerpt(limit_key)}{where} {wrong}"
    return None


def _excerpt(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."
