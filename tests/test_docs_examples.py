"""The Python examples of the docs and the README run as written against Restate with the demo's
services registered (``examples/handlers.py``), as a reader running ``make demo`` has them.

Each block runs on its own, in a fresh namespace, with ``http://localhost:8080`` (and
``$RESTATE_URL``) pointing at the session's Restate server. The client's examples are complete
programs (``asyncio.run(main())``, or the blocking ``SyncClient``) with ids and idempotency keys
new on every run, so each runs twice here as a reader would run it again.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
import types
from pathlib import Path

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


DEMO_SERVICES = {"Notifier", "Orders", "Payment"}
"""What ``make demo`` registers (``examples/handlers.py``)."""
TARGET = re.compile(
    r"""\.(?:service|object|workflow|workflow_handle|service_invocation|object_invocation)"""
    r"""\(\s*["']([^"']+)["']"""
)


def client_blocks() -> list[tuple[Path, int, str]]:
    """Every block that runs and uses the client, with its page and number."""
    return [
        (page, number, source)
        for page in pages_with_examples()
        for number, source in enumerate(section_blocks(page.read_text()), 1)
        if "bridge.ingress" in source
    ]


@pytest.mark.parametrize(
    ("page", "number", "source"),
    [pytest.param(*b, id=f"{b[0].relative_to(ROOT)}:{b[1]}") for b in client_blocks()],
)
def test_client_examples_are_complete_programs_for_the_demo(
    page: Path, number: int, source: str
) -> None:
    where = f"{page.relative_to(ROOT)} example {number}"
    tree = ast.parse(source)  # no top-level await: a program, not a REPL session
    assert "from bridge.ingress import" in source, where
    if "SyncClient" not in source:
        assert source.rstrip().endswith("asyncio.run(main())"), where
        assert any(isinstance(n, ast.AsyncFunctionDef) and n.name == "main" for n in tree.body)
    targets = set(TARGET.findall(source))
    assert targets, where
    assert targets <= DEMO_SERVICES, f"{where}: {targets - DEMO_SERVICES} is not in the demo"
    for call in ast.walk(tree):
        if isinstance(call, ast.keyword) and call.arg == "idempotency_key":
            # a constant key would find the previous run's invocation
            assert not isinstance(call.value, ast.Constant), f"{where}: a constant key"


def test_the_readme_and_the_client_page_are_among_the_pages_run() -> None:
    assert {ROOT / "README.md", CLIENT_PAGE} <= set(pages_with_examples())


def run_block(page: Path, number: int, source: str, url: str) -> None:
    """One block as ``python example.py`` would run it: its own ``__main__``-like module."""
    module = types.ModuleType("docs_example")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    try:
        code = compile(
            source.replace(README_URL, url),
            f"{page.relative_to(ROOT)}:example-{number}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
        result = eval(code, module.__dict__)  # our own docs, on a test stack
        if inspect.iscoroutine(result):
            asyncio.run(result)
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize("page", pages_with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run_as_written(
    page: Path,
    demo_services: RestateServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RESTATE_URL", demo_services.ingress_url)
    monkeypatch.delenv("RESTATE_AUTH_TOKEN", raising=False)
    for number, source in enumerate(section_blocks(page.read_text()), 1):
        assert README_URL in source or "from_env" in source or "Client(" not in source
        for _ in range(2):  # ids and keys are new on every run, so a second run passes too
            run_block(page, number, source, demo_services.ingress_url)
    printed = capsys.readouterr().out
    assert "inv_" in printed
    if page == CLIENT_PAGE:
        assert printed.count("sent welcome to World") == 2
        assert printed.count("sent reminder to World") == 2
        assert printed.count("refusing a payment of 0.0") == 2
        assert printed.count("timed out; the invocation may still run in Restate") == 2
        assert printed.count("sent reminder to ada") == 2  # NotReady, then attach
