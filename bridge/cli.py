"""The ``restate-bridge`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bridge import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restate-bridge",
        description="Consume Kafka topics and turn every record into a Restate invocation.",
    )
    parser.add_argument("--version", action="version", version=f"restate-bridge {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
