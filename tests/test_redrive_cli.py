"""``restate-bridge redrive``'s arguments and routing file: what it refuses before it connects
to anything (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main

ROUTES = """[kafka]
bootstrap_servers = "127.0.0.1:1"
[restate]
ingress_url = "http://127.0.0.1:1"
{dead_letter}
[[routes]]
name = "late"
topic = "orders"
target = "object"
service = "Late"
handler = "take"
key = "{{key}}"
"""


def routes(tmp_path: Path, dead_letter: str = '[dead_letter]\ntopic = "dlq"') -> str:
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES.format(dead_letter=dead_letter))
    return str(path)


def test_without_a_dead_letter_topic_there_is_nothing_to_redrive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["redrive", routes(tmp_path, dead_letter="")]) == 2
    assert "no [dead_letter] topic: nothing to redrive" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "neither an ISO 8601 time"),
        (["--until", "5"], "neither an ISO 8601 time"),
        (["--reason", "("], "not a regular expression"),
        (["--limit", "-1"], "not a count"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["redrive", routes(tmp_path), *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_since_must_come_before_until(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--since", "2026-12-05", "--until", "2026-12-04"]
    assert main(["redrive", routes(tmp_path), *args]) == 2
    assert "--since must be earlier than --until" in capsys.readouterr().err
