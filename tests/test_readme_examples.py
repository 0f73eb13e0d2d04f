"""README's "The ingress client" examples run as written against the test stack.

The ```python blocks of that section run in order in one namespace, like a doctest session, with
``http://localhost:8080`` (and ``$RESTATE_URL``) pointing at the session's Restate server. Blocks
with top-level ``await`` run on an event loop; the others (``SyncClient``) run in this thread.
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

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## The ingress client"
README_URL = "http://localhost:8080"


def section_blocks(text: str) -> list[str]:
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


def test_the_section_has_examples() -> None:
    blocks = section_blocks(README.read_text())
    assert len(blocks) >= 5
    joined = "\n".join(blocks)
    for used in ("SyncClient", "output=", "attach(", "idempotency_key=", "timeout="):
        assert used in joined


def test_readme_examples_run_as_written(
    restate: RestateServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESTATE_URL", restate.ingress_url)
    monkeypatch.delenv("RESTATE_AUTH_TOKEN", raising=False)
    module = types.ModuleType("readme_examples")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, Any] = module.__dict__
    blocks = section_blocks(README.read_text())
    for number, source in enumerate(blocks, 1):
        assert README_URL in source or "from_env" in source or "Client(" not in source
        code = compile(
            source.replace(README_URL, restate.ingress_url),
            f"README.md:ingress-client-example-{number}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
        result = eval(code, namespace)  # our own README, on a test stack
        if inspect.iscoroutine(result):
            asyncio.run(result)
    printed = capsys.readouterr().out
    assert "Hello, World!" in printed
    assert "Hello, later!" in printed
    assert "inv_" in printed
