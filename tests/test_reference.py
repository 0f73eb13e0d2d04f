"""The generated references: committed as the generator makes them now, each saying so on its
first line, and covering what they describe (every routing-file key, metric, CLI verb, public
client name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import ingress
from bridge.cli import build_parser
from bridge.config.schema import ROUTE_KEYS, SECTIONS
from bridge.operate.metrics import Metrics
from bridge.reference import ROOT, generated, main, stale, write
from bridge.reference.options import tables
from bridge.reference.pages import COMMAND, metrics_page, route_keys_listed

REGENERATE = f"run `{COMMAND}` and commit the result"


@pytest.mark.parametrize("name", sorted(generated()))
def test_the_committed_page_is_what_the_code_makes_now(name: str) -> None:
    path = ROOT / name
    assert path.is_file(), f"{name} is missing; {REGENERATE}"
    assert path.read_text(encoding="utf-8") == generated()[name](), f"{name} is stale; {REGENERATE}"


@pytest.mark.parametrize("name", sorted(n for n in generated() if n.endswith(".md")))
def test_a_page_says_it_is_generated_and_by_what(name: str) -> None:
    first = generated()[name]().splitlines()[0]
    assert "Generated" in first
    assert COMMAND in first


def test_check_names_each_stale_page_and_write_mends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert set(write(tmp_path)) == set(generated())
    assert stale(tmp_path) == []
    (tmp_path / "docs/reference/metrics.md").write_text("old\n")
    (tmp_path / "routes.schema.json").unlink()
    assert stale(tmp_path) == ["docs/reference/metrics.md", "routes.schema.json"]
    assert write(tmp_path) == ["docs/reference/metrics.md", "routes.schema.json"]
    assert stale(tmp_path) == []


def test_the_check_command_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0, capsys.readouterr().err


def test_every_routing_file_key_is_listed() -> None:
    assert route_keys_listed() == ROUTE_KEYS
    page = generated()["docs/reference/routes.md"]()
    for table in SECTIONS:
        assert f"## `[{table}]`" in page
    for variable in ("RESTATE_URL", "BRIDGE_LOG_LEVEL", "RESTATE_AUTH_TOKEN", "KAFKA_BOOTSTRAP"):
        assert variable in page


def test_every_metric_is_listed_as_exposed() -> None:
    page = metrics_page()
    exposed = Metrics().export().decode()
    names = {line.split()[2] for line in exposed.splitlines() if line.startswith("# TYPE ")}
    ours = {n for n in names if n.startswith("restate_bridge_") and not n.endswith("_created")}
    assert len(ours) > 20
    for name in ours:  # as exposed: a counter's TYPE line names it with _total
        assert f"`{name}" in page, name


def test_every_cli_verb_and_the_client_api_are_listed() -> None:
    cli_page = generated()["docs/reference/cli.md"]()
    verbs = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"run", "check", "route", "result", "schema"} <= set(verbs)
    for verb in verbs:
        assert f"## `restate-bridge {verb}`" in cli_page
    client_page = generated()["docs/reference/client.md"]()
    for name in ingress.__all__:
        assert client_page.count(f"::: bridge.ingress.{name}\n") == 1


def test_every_option_has_a_description() -> None:
    bare = [f"[{t.name}] {o.key}" for t in tables() for o in t.options if not o.doc.strip()]
    assert not bare, f"give these fields a docstring in bridge/config/schema.py: {bare}"
