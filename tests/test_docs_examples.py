"""The Python examples of the docs and the README run as written against the test stack.

Each page's ```python blocks run in order in one namespace, like a doctest session, with
``http://localhost:8080`` (and ``$RESTATE_URL``) pointing at the session's Restate server. Blocks
with top-level ``await`` run on an event loop; the others (``SyncClient``, complete programs
ending in ``asyncio.run``) run in this thread.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PAGE = ROOT / "docs" / "client.md"
README_URL = "http://localhost:8080"
PAGES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]]


COMPILE_ONLY = "<!-- example: compile-only"
"""Before a block that needs what the tests do not have (an OTLP collector, a bridge running
forever): it is compiled, not run."""
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::[\w-]+)?"$')
"""A block included from a file (``pymdownx.snippets``) that the tests already run."""


def all_blocks(text: str) -> list[tuple[str, str]]:
    """``(mode, source)`` of every ```python block: ``run``, ``compile`` or ``include``."""
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        source = match.group(1)
        if all(SNIPPET.match(line) for line in source.strip().splitlines()):
            found.append(("include", source))
        elif before.startswith(COMPILE_ONLY):
            found.append(("compile", source))
        else:
            found.append(("run", source))
    return found


def section_blocks(text: str) -> list[str]:
    """The blocks that run."""
    return [source for mode, source in all_blocks(text) if mode == "run"]


def pages_with_examples() -> list[Path]:
    return [p for p in PAGES if section_blocks(p.read_text())]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_blocks_not_run_compile_or_name_files_that_exist(page: Path) -> None:
    for mode, source in all_blocks(page.read_text()):
        if mode == "compile":
            compile(source, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        elif mode == "include":
            for line in source.strip().splitlines():
                match = SNIPPET.match(line)
                assert match is not None
                assert (ROOT / match.group(1)).is_file(), f"{page}: {line}"


def test_the_client_page_has_examples() -> None:
    blocks = section_blocks(CLIENT_PAGE.read_text())
    assert len(blocks) >= 5
    joined = "\n".join(blocks)
    for used in ("SyncClient", "output=", "attach(", "idempotency_key=", "timeout="):
        assert used in joined


def test_the_readme_and_the_client_page_are_among_the_pages_run() -> None:
    assert {ROOT / "README.md", CLIENT_PAGE} <= set(pages_with_examples())


@pytest.mark.parametrize("page", pages_with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run_as_written(
    page: Path,
    restate: RestateServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RESTATE_URL", restate.ingress_url)
    monkeypatch.delenv("RESTATE_AUTH_TOKEN", raising=False)
    module = types.ModuleType("docs_examples")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, Any] = module.__dict__
    blocks = section_blocks(page.read_text())
    for number, source in enumerate(blocks, 1):
        assert README_URL in source or "from_env" in source or "Client(" not in source
        code = compile(
            source.replace(README_URL, restate.ingress_url),
            f"{page.relative_to(ROOT)}:example-{number}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
        result = eval(code, namespace)  # our own README, on a test stack
        if inspect.iscoroutine(result):
            asyncio.run(result)
    printed = capsys.readouterr().out
    assert "inv_" in printed
    if page == CLIENT_PAGE:
        assert "Hello, World!" in printed
        assert "Hello, later!" in printed
