"""The docs are product: a short README, a site whose pages are all in its navigation, no internal
references, and every routing-file example in them valid for the loader and the JSON Schema.
(``mkdocs build --strict`` in ``make test`` fails on a broken link or anchor; the Python examples
run in tests/test_docs_examples.py; the generated references are checked in
tests/test_reference.py.)"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from bridge.cli import build_parser
from tests.routing_schema import loader_problems, validate_routing_toml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
NOT_CHECKED = "<!-- not-checked:"
"""Before a ```toml block that cannot load as written (it names files or variables a reader has
and the tests do not): said why, and used sparingly."""
KAFKA = '[kafka]\nbootstrap_servers = "localhost:9092"\n'
ROUTE = '\n[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
INTERNAL = [
    re.compile(r"\bissue #?\d+", re.I),
    re.compile(r"(?<![\w&/-])#\d{1,3}\b(?![\w-])"),
    re.compile(r"design card", re.I),
    re.compile(r"\b(?:this|last|previous|earlier|next) session\b", re.I),
    re.compile(r"this (?:project's )?(?:2-core |shared 2-core )?machine", re.I),
]


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; the rest belongs in docs/"


def prose(text: str) -> str:
    """``text`` without its code blocks (a comment in a shell example may say "session")."""
    return re.sub(r"^```.*?^```$", "", text, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_internal_references(page: Path) -> None:
    text = prose(page.read_text())
    for pattern in INTERNAL:
        found = pattern.search(text)
        assert found is None, f"{page.relative_to(ROOT)}: {found.group(0)!r} (internal)"


def nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in nav_pages(value)]
    return []


def test_every_page_is_in_the_navigation_and_every_entry_is_a_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(listed) == pages
    assert len(listed) == len(set(listed)), "a page is listed twice"


def toml_blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"^```toml\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            if before.startswith(NOT_CHECKED):
                continue
            line = text[: match.start()].count("\n") + 2
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def test_the_docs_have_routing_examples() -> None:
    assert len(toml_blocks()) >= 10


@pytest.mark.parametrize(("where", "block"), toml_blocks(), ids=[w for w, _ in toml_blocks()])
def test_every_routing_example_loads_and_validates(where: str, block: str) -> None:
    """An excerpt gets what a whole file needs (the brokers, a route) and must then load as
    ``restate-bridge check`` loads a file, and validate against ``routes.schema.json``."""
    tomllib.loads(block)  # a syntax error names the block
    whole = block if "[kafka]" in block else KAFKA + block
    if "[[routes]]" not in whole:
        whole += ROUTE
    assert loader_problems(whole) == [], where
    assert validate_routing_toml(block, whole=False) == [], where


def shell_commands() -> list[tuple[str, list[str]]]:
    """``(page:line, argv)`` of every ``restate-bridge`` command in the docs' shell blocks, with
    ``$`` prompts, comments and backslash continuations handled as a shell would."""
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.finditer(r"^```(?:sh|bash|console|shell)\n(.*?)^```$", text, re.M | re.S)
        for match in blocks:
            first = text[: match.start()].count("\n") + 2
            lines = match.group(1).replace("\\\n", "  ").splitlines()
            for number, line in enumerate(lines, first):
                line = line.removeprefix("$ ")
                if line.startswith("restate-bridge "):
                    argv = shlex.split(line, comments=True)
                    found.append((f"{page.relative_to(ROOT)}:{number}", argv[1:]))
    return found


def test_the_docs_show_the_cli() -> None:
    verbs = {argv[0] for _, argv in shell_commands()}
    assert {"check", "route", "run", "result"} <= verbs


@pytest.mark.parametrize(("where", "argv"), shell_commands(), ids=[w for w, _ in shell_commands()])
def test_every_cli_example_parses(where: str, argv: list[str]) -> None:
    """A command in the docs is one the CLI accepts: its verb and options exist as spelt."""
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: restate-bridge {shlex.join(argv)} (exit {exc.code})")
