"""``restate-bridge redrive``'s arguments and routing file: what it refuses before it connects
to anything (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import RedriveReport, main
from bridge.config import load_config
from bridge.core.redrive import Summary

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


def test_an_unreachable_kafka_stops_the_run_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["redrive", routes(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "redrive of 'dlq' (group 'restate-bridge.redrive') stopped: " in err
    assert "0 sent, 0 previously accepted, 0 still failing, 0 skipped by filter" in err


def test_the_progress_line_only_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(Path(routes(tmp_path)), {})
    RedriveReport(config, tty=False).progress(Summary(sent=1), 5)
    assert capsys.readouterr().err == ""
    shown = RedriveReport(config, tty=True)
    shown.progress(Summary(sent=1), 5)
    shown.end()
    assert capsys.readouterr().err == (
        "\r\x1b[Kredrive: 1 of at most 5: 1 sent, 0 previously accepted, 0 still failing, "
        "0 skipped by filter\r\x1b[K"
    )


def test_the_bridges_own_group_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["redrive", routes(tmp_path), "--group-id", "restate-bridge"]) == 2
    assert "--group-id must not be the bridge's own group" in capsys.readouterr().err
