"""Log files a failing test's report shows: the session's servers' and the test's own processes'."""

from __future__ import annotations

from pathlib import Path

import pytest

LOGS_KEY = pytest.StashKey[list[Path]]()


def keep_log(owner: pytest.Config | pytest.Item, path: Path) -> None:
    """Show ``path``'s tail when a test fails: every test for the session's servers (owner: the
    config), only the owning test for its own processes (owner: the test item)."""
    owner.stash.setdefault(LOGS_KEY, []).append(path)


def tails(item: pytest.Item, lines: int = 30) -> list[tuple[str, str]]:
    """(title, tail) for every log kept for ``item``."""
    out = []
    for path in [*item.config.stash.get(LOGS_KEY, []), *item.stash.get(LOGS_KEY, [])]:
        if path.exists():
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            out.append((f"stack log {path}", tail))
    return out
