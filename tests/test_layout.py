"""The package layout is the architecture: the pure core does no I/O, imports run one way along
the data flow, and no class or function grows past what a reader holds in their head."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"

IO_MODULES = {"asyncio", "aiohttp", "aiokafka", "socket", "ssl", "selectors", "httpx", "uvloop"}
"""What a module of the pure core may not import (at run time)."""

MAY_IMPORT = {
    # package: the bridge packages its modules may import (besides their own)
    "core": {"config"},
    "config": {"core", "schemas", "tracing", "extras"},
    "sinks": {"core"},
    "deliver": {"core", "config", "ingress", "sinks", "operate", "tracing"},
    "consume": {"core", "config", "deliver", "sinks", "schemas", "operate", "extras"},
    "operate": {"core", "config", "ingress", "deliver", "sinks", "consume"},
    # the references read what they describe (the CLI's parser is imported lazily, from cli.py)
    "reference": {"core", "config", "ingress", "operate", "cli"},
}
"""Records flow core -> consume -> deliver -> sinks; operate watches them all. Nothing below
reaches back up: the pure core knows no side, delivery knows nothing of Kafka's consumer."""

DECLARATIONS = {
    ("operate/metrics.py", "Metrics"),
    ("operate/metrics.py", "__init__"),
    ("cli.py", "build_parser"),
}
"""Tables of declarations (every metric, every CLI option): long, but one line per item."""


def _modules(package: str) -> list[Path]:
    return sorted((BRIDGE / package).rglob("*.py"))


def _runtime_imports(tree: ast.Module) -> list[tuple[str, int, int]]:
    """(module, level, line) of every import outside ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[str, int, int]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                continue
            if isinstance(node, ast.Import):
                found.extend((alias.name, 0, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.append((node.module or "", node.level, node.lineno))
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    visit([c for c in children if isinstance(c, ast.stmt)])
                    for handler in children:
                        if isinstance(handler, ast.ExceptHandler):
                            visit(handler.body)

    visit(tree.body)
    return found


def _bridge_package(path: Path, module: str, level: int) -> str | None:
    """The top package under ``bridge`` an import of ``path`` names, if it names one."""
    if level == 0:
        parts = module.split(".")
        return parts[1] if parts[0] == "bridge" and len(parts) > 1 else None
    here = path.relative_to(BRIDGE).parent.parts
    base = list(here[: len(here) - (level - 1)])
    target = base + [p for p in module.split(".") if p]
    return target[0] if target else None


@pytest.mark.parametrize("path", _modules("core"), ids=lambda p: p.name)
def test_the_pure_core_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for module, level, line in _runtime_imports(tree):
        if level == 0:
            assert module.split(".")[0] not in IO_MODULES, f"{path.name}:{line} imports {module}"


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_run_one_way(package: str) -> None:
    allowed = MAY_IMPORT[package] | {package}
    wrong = []
    for path in _modules(package):
        for module, level, line in _runtime_imports(ast.parse(path.read_text())):
            target = _bridge_package(path, module, level)
            if target is None or target in allowed:
                continue
            if (BRIDGE / target).is_dir() or (BRIDGE / f"{target}.py").exists():
                wrong.append(f"{path.relative_to(BRIDGE)}:{line} imports bridge.{target}")
    assert not wrong, "\n".join(wrong)


def test_no_class_above_300_lines_and_no_function_above_60() -> None:
    long = []
    for path in sorted(BRIDGE.rglob("*.py")):
        rel = str(path.relative_to(BRIDGE))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                limit = 300 if isinstance(node, ast.ClassDef) else 60
                if lines > limit and (rel, node.name) not in DECLARATIONS:
                    long.append(f"{rel}:{node.lineno}: {node.name} has {lines} lines")
    assert not long, "\n".join(long)


def test_the_code_map_names_every_module_and_only_those() -> None:
    section = (BRIDGE.parent / "docs" / "architecture.md").read_text()
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    named = {n for row in rows for n in re.findall(r"`([a-z_/]+(?:\.py|/))`", row.split("|")[1])}
    files = {
        str(p.relative_to(BRIDGE))
        for p in BRIDGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    packages = {n for n in named if n.endswith("/")}
    covered = {f for f in files if any(f.startswith(pkg) for pkg in packages)}
    missing = sorted(files - covered - named)
    unknown = sorted(n for n in named if n not in files and n not in packages)
    assert not missing, f"modules the code map (docs/architecture.md) does not name: {missing}"
    assert not unknown, f"the code map (docs/architecture.md) names what is not there: {unknown}"
