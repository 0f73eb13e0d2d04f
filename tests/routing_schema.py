"""The routing file's JSON Schema from the test side: validating a TOML text against the shipped
``routes.schema.json``, the loader's verdict on the same text, and every routing file the
repository carries (``routes.toml``, the Helm values, the README's and the docs' blocks, the
tests' literal files).

``validate_routing_toml(text)`` is what a docs test calls for each ``toml`` block.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bridge.config import ConfigError
from bridge.config.loader import parse_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "routes.schema.json"


@cache
def validator(whole: bool = True) -> jsonschema.Draft202012Validator:
    """The shipped schema; ``whole=False``: without the tables every file needs (``[kafka]``,
    ``[[routes]]``), for an excerpt."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    if not whole:
        del schema["required"]
    return jsonschema.Draft202012Validator(schema)


def schema_problems(document: dict[str, Any], *, whole: bool = True) -> list[str]:
    """What the schema finds wrong with a parsed document, one ``path: message`` each."""
    found = validator(whole).iter_errors(document)
    ordered = sorted(found, key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in ordered]


def validate_routing_toml(text: str, *, whole: bool = True) -> list[str]:
    """The problems ``routes.schema.json`` finds in a routing file's text (``[]``: it validates);
    a TOML syntax error is one problem. ``whole=False`` checks an excerpt (a docs example with
    only ``[[routes]]``, say): every key and value, but no table is required."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"TOML syntax error: {exc}"]
    return schema_problems(document, whole=whole)


def secrets_env(text: str) -> dict[str, str]:
    """An environment that sets every variable a ``*_env`` key of ``text`` names."""
    names = re.findall(r"_env\s*=\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']", text)
    return {name: "secret" for name in names}


def loader_problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """What ``restate-bridge check`` finds wrong with ``text`` (``[]``: it loads)."""
    try:
        parse_config(text, Path("routes.toml"), secrets_env(text) if env is None else env)
    except ConfigError as exc:
        return exc.problems
    return []


# -- the routing files the repository carries ---------------------------------------------------


KAFKA = '[kafka]\nbootstrap_servers = "kafka:9092"\n'
"""What a literal ``[[routes]]`` without its ``[kafka]`` table is completed with."""


def _literal_files(path: Path) -> Iterator[str]:
    """String constants in a Python file that are routing files: whole, or routes that the test
    puts after a ``[kafka]`` table."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if "[[routes]]" in text:
                yield text if "[kafka]" in text else KAFKA + text


def routing_files() -> dict[str, str]:
    """Every routing file of the repository, by where it is: ``routes.toml``, the Helm chart's
    values, the README's and the docs' ``toml`` blocks and the files the tests and examples
    write out whole."""
    found = {"routes.toml": (ROOT / "routes.toml").read_text(encoding="utf-8")}
    for values in sorted((ROOT / "deploy").rglob("*values*.yaml")):
        routes = (yaml.safe_load(values.read_text(encoding="utf-8")) or {}).get("routes")
        if isinstance(routes, str) and routes.strip():
            found[str(values.relative_to(ROOT))] = routes
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for number, block in enumerate(re.findall(r"```toml\n(.*?)```", text, re.S), start=1):
            if "[kafka]" in block and "[[routes]]" in block:
                found[f"{page.relative_to(ROOT)} toml block {number}"] = block
    for folder in ("tests", "examples", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, text in enumerate(_literal_files(path), start=1):
                found[f"{path.relative_to(ROOT)} #{number}"] = text
    return found
