"""bridge.core.scopes: Restate 1.7's rules for a scope and a limit key (``RestrictedValue``:
1 to 36 of ``a-z A-Z 0-9 _ . -``; a limit key of one or two such parts). Pure: a table."""

from __future__ import annotations

import pytest

from bridge.core.scopes import limit_key_problem, scope_problem

RULE = "1 to 36 of the characters a-z A-Z 0-9 _ . -"


@pytest.mark.parametrize("scope", ["a", "tenant-1", "my_scope.v2-beta", "A" * 36, "0", "-", "."])
def test_scopes_restate_accepts(scope: str) -> None:
    assert scope_problem(scope) is None


@pytest.mark.parametrize(
    ("scope", "problem"),
    [
        ("", "scope '' is empty"),
        ("a" * 37, f"scope '{'a' * 37}' is 37 characters long; Restate allows {RULE}"),
        ("has space", f"scope 'has space' holds characters Restate refuses; it allows {RULE}"),
        ("a/b", f"scope 'a/b' holds characters Restate refuses; it allows {RULE}"),
        ("ünï", f"scope 'ünï' holds characters Restate refuses; it allows {RULE}"),
        ("a\nb", f"scope 'a\\nb' holds characters Restate refuses; it allows {RULE}"),
        ("a%20b", f"scope 'a%20b' holds characters Restate refuses; it allows {RULE}"),
    ],
)
def test_scopes_restate_refuses(scope: str, problem: str) -> None:
    assert scope_problem(scope) == problem


@pytest.mark.parametrize("key", ["tenant", "tenant/user", "a.b/c-d_e", "x" * 36 + "/" + "y" * 36])
def test_limit_keys_restate_accepts(key: str) -> None:
    assert limit_key_problem(key) is None


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "limit key '' is empty"),
        (
            "a/b/c",
            "limit key 'a/b/c' has 3 parts; Restate allows one or two joined by '/' (such as "
            "'tenant' or 'tenant/user')",
        ),
        ("a/", "limit key 'a/' (part '') is empty"),
        ("/b", "limit key '/b' (part '') is empty"),
        ("a b", f"limit key 'a b' holds characters Restate refuses; it allows {RULE}"),
        (
            "t/u v",
            f"limit key 't/u v' (part 'u v') holds characters Restate refuses; it allows {RULE}",
        ),
        ("z" * 37, f"limit key '{'z' * 37}' is 37 characters long; Restate allows {RULE}"),
    ],
)
def test_limit_keys_restate_refuses(key: str, problem: str) -> None:
    assert limit_key_problem(key) == problem
