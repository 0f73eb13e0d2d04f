"""References generated from the code: the routing file (and its JSON Schema), the metrics, the
command line and the ingress client's API.

``python -m bridge.reference`` writes them (``docs/reference/*.md`` and ``routes.schema.json``
at the repository's top); ``python -m bridge.reference --check`` writes nothing and exits 1
naming each page that differs from what the code makes now.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository: the directory that holds the ``bridge`` package."""


def _cli_page() -> str:
    from .. import cli  # the CLI imports this package for its ``schema`` verb
    from .pages import cli_page

    return cli_page(cli.build_parser, cli.__doc__ or "")


def generated() -> dict[str, Callable[[], str]]:
    """Each generated file, relative to the repository, and what makes its text."""
    from .json_schema import schema_text
    from .pages import client_page, metrics_page, routes_page

    return {
        "docs/reference/routes.md": routes_page,
        "docs/reference/metrics.md": metrics_page,
        "docs/reference/cli.md": _cli_page,
        "docs/reference/client.md": client_page,
        "routes.schema.json": schema_text,
    }


def stale(root: Path = ROOT) -> list[str]:
    """The generated files under ``root`` that are missing or differ from what the code makes."""
    found = []
    for name, make in generated().items():
        path = root / name
        if not path.is_file() or path.read_text(encoding="utf-8") != make():
            found.append(name)
    return found


def write(root: Path = ROOT) -> list[str]:
    """Write every generated file under ``root``; the names of those that changed."""
    changed = []
    for name, make in generated().items():
        path = root / name
        text = make()
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridge.reference [--check]``."""
    parser = argparse.ArgumentParser(prog="python -m bridge.reference", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a page is stale"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the repository checkout (default: the one this package is in)",
    )
    args = parser.parse_args(argv)
    if args.check:
        old = stale(args.root)
        for name in old:
            print(f"{name} is stale: run python -m bridge.reference", file=sys.stderr)
        return 1 if old else 0
    for name in write(args.root):
        print(f"wrote {name}")
    return 0
