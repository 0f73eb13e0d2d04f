"""bridge.cli in-process: ``check``, ``route`` and ``--version``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge import __version__, cli
from bridge.cli import log_tasks, main
from bridge.config import BridgeConfig, ConfigError

GOOD = """\
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[restate]
ingress_url = "http://restate:8080/"

[[routes]]
name = "ledger"
topic = "ledger"
target = "object"
service = "Ledger"
handler = "append"
key = "{key}"
match = { "header.kind" = "credit" }
delay = "{header.delay}"
headers = ["x-trace"]

[[routes]]
name = "audit"
topic = "ledger"
target = "service"
service = "Audit"
handler = "record"
body = "{value.payload}"
"""

BAD = """\
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[[routes]]
topic = "t"
target = "actor"
service = "S"
handler = "h"
delay = "soon"
"""


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RESTATE_URL", "KAFKA_BOOTSTRAP_SERVERS", "BRIDGE_METRICS_LISTEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BRIDGE_LOG_LEVEL", raising=False)


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(GOOD, encoding="utf-8")
    return path


def lines(out: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.splitlines()]


def test_check_ok(routes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(routes)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{routes}: ok, 2 route(s)\n"
    assert err == ""


def test_check_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD, encoding="utf-8")
    assert main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:6: target must be one of service, object, workflow, not 'actor'",
        f"{path}:9: delay: bad duration 'soon'; write it like '4s', '500ms', '1h30m' or 'PT2S'",
    ]


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}: no such file\n"


def test_check_honours_restate_url(
    routes: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTATE_URL", "not-a-url")
    assert main(["check", str(routes)]) == 2
    assert (
        capsys.readouterr().err == "$RESTATE_URL: ingress_url must start with http:// or https://\n"
    )


def test_route_fan_out(routes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            *f"route {routes} --topic ledger --key".split(),
            "acct/7 ü",
            *["--header", "kind=credit", "--header", "delay=1001ms", "--header", "x-trace=t-1"],
            "--header",
            "x-other=o",
            "--value",
            '{"payload": {"amount": 5}}',
            *["--partition", "3", "--offset", "42"],
        ]
    )
    assert code == 0
    out, err = capsys.readouterr()
    assert err == ""
    ledger, audit = lines(out)
    assert ledger == {
        "route": "ledger",
        "target": "object",
        "url": "http://restate:8080/Ledger/acct%2F7%20%C3%BC/append/send?delay=1001ms",
        "service": "Ledger",
        "handler": "append",
        "key": "acct/7 ü",
        "idempotency_key": "ledger-3-42:ledger",
        "delay_seconds": 1.001,
        "headers": {"x-trace": "t-1"},
        "content_type": "application/json",
        "body": '{"payload": {"amount": 5}}',
    }
    assert audit == {
        "route": "audit",
        "target": "service",
        "url": "http://restate:8080/Audit/record/send",
        "service": "Audit",
        "handler": "record",
        "key": None,
        "idempotency_key": "ledger-3-42:audit",
        "delay_seconds": None,
        "headers": {},
        "content_type": "application/json",
        "body": '{"amount":5}',
    }


def test_route_shows_trace_headers_forwarded_and_dropped(
    routes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"
    code = main(
        [
            *f"route {routes} --topic ledger --key k".split(),
            *["--header", "kind=credit", "--header", "delay=1s", "--header", f"traceparent={good}"],
            *["--header", "tracestate=Not A List", "--value", '{"payload": {}}'],
        ]
    )
    assert code == 0
    ledger, audit = lines(capsys.readouterr().out)
    sent = good[:-2] + "01"  # only the sampled flag: Restate 1.7 ignores "03"
    for each in (ledger, audit):
        assert each["headers"] == {"traceparent": sent}
        assert each["trace_headers_dropped"] == [
            "tracestate is not a list of key=value members of printable ASCII"
        ]


def test_route_without_delay_header_is_poison_for_that_route(
    routes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *f"route {routes} --topic ledger --key k --header kind=credit".split(),
            "--value",
            '{"payload": 1}',
        ]
    )
    assert code == 0
    poison, audit = lines(capsys.readouterr().out)
    assert poison == {"route": "ledger", "dead_letter": "header 'delay' is missing"}
    assert audit["route"] == "audit"
    assert audit["body"] == "1"


def test_route_poison_on_non_json_value(routes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", str(routes), "--topic", "ledger", "--value", "plain"]) == 0
    (poison,) = lines(capsys.readouterr().out)
    assert poison["route"] == "audit"
    assert poison["dead_letter"].startswith("the record value is not JSON (")


def test_route_unrouted_prints_nothing(routes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", str(routes), "--topic", "elsewhere", "--value", "{}"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "no route matches a record on topic 'elsewhere'\n"


def test_route_bad_header_argument(routes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", str(routes), "--topic", "ledger", "--header", "novalue"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "--header 'novalue': write it as NAME=VALUE\n"


def test_route_on_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD, encoding="utf-8")
    assert main(["route", str(path), "--topic", "t"]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:6: target must be one of")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"restate-bridge {__version__}\n"
    assert __version__ == "0.1.0"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: restate-bridge" in capsys.readouterr().err


def test_run_refuses_a_bad_routes_file_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "routes.toml"
    bad.write_text(GOOD.replace('target = "service"', 'target = "svc"'))
    assert main(["run", "--routes", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:21: target must be one of service, object, workflow, not 'svc'" in err


def test_run_exits_1_with_a_clear_line_when_kafka_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        GOOD.replace("127.0.0.1:9092", "127.0.0.1:1") + '\n[metrics]\nlisten = "127.0.0.1:0"\n'
    )
    assert main(["run", "--routes", str(routes)]) == 1
    assert "Kafka at 127.0.0.1:1: KafkaConnectionError" in caplog.text


# -- bad files and environments: exit 2, one line each, never a traceback ----------------------


def test_check_a_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routes.toml"
    path.write_bytes(GOOD.encode().replace(b'"ledger"', b'"l\xe9dger"', 1))
    assert main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{path}:8: the routes file is not UTF-8 text (byte 0xe9)\n"


@pytest.mark.parametrize("command", ["check", "run", "route"])
def test_a_bad_log_level_in_the_environment(
    command: str,
    routes: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_LOG_LEVEL", "loud")
    argv = {
        "check": ["check", str(routes)],
        "run": ["run", "--routes", str(routes)],
        "route": ["route", str(routes), "--topic", "ledger"],
    }[command]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "$BRIDGE_LOG_LEVEL: log level must be one of debug, info, warning, error, critical, "
        "not 'loud'\n"
    )


def test_a_bad_log_level_flag(routes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--routes", str(routes), "--log-level", "loud"])
    assert info.value.code == 2
    assert "argument --log-level: log level must be one of debug" in capsys.readouterr().err


def test_an_unexpected_error_while_loading_is_one_line(
    routes: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(path: Path, env: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "load_config", explode)
    for argv in (["check", str(routes)], ["run", "--routes", str(routes)]):
        assert main(argv) == 2
        assert capsys.readouterr().err == (
            f"{routes}:1: cannot load the routes file: RuntimeError: boom\n"
        )


class FakeBridge:
    def __init__(self, config: BridgeConfig, load: Callable[[BridgeConfig], BridgeConfig]) -> None:
        seen["config"] = config
        seen["load"] = load


seen: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("env_level", "flag", "level"),
    [
        (None, [], "INFO"),
        ("warning", [], "WARNING"),
        ("warning", ["--log-level", "Debug"], "DEBUG"),
    ],
)
def test_run_takes_level_and_token_from_the_config(
    env_level: str | None,
    flag: list[str],
    level: str,
    routes: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env_level is None:
        monkeypatch.delenv("BRIDGE_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("BRIDGE_LOG_LEVEL", env_level)
    monkeypatch.setenv("RESTATE_AUTH_TOKEN", "s3cret")
    logged: dict[str, Any] = {}
    monkeypatch.setattr(cli.logging, "basicConfig", lambda **kw: logged.update(kw))
    monkeypatch.setattr(cli, "Bridge", FakeBridge)

    async def serve(bridge: object) -> int:
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    assert main(["run", "--routes", str(routes), *flag]) == 0
    assert logged["level"] == level
    assert seen["config"].restate.token == "s3cret"
    # a reload reads the same file, with the same environment
    assert seen["load"](seen["config"]) == seen["config"]


def test_a_reload_reads_the_file_again_and_reports_problems_as_path_line(
    routes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "Bridge", FakeBridge)

    async def serve(bridge: object) -> int:
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    assert main(["run", "--routes", str(routes)]) == 0
    running = seen["config"]
    routes.write_text(routes.read_text().replace('target = "', 'target = "x', 1))
    with pytest.raises(ConfigError) as caught:
        seen["load"](running)
    assert caught.value.problems[0].startswith(f"{routes}:")
    routes.write_bytes(b"\xff")
    with pytest.raises(ConfigError) as caught:
        seen["load"](running)
    assert caught.value.problems == [f"{routes}:1: the routes file is not UTF-8 text (byte 0xff)"]


def test_route_key_hex_and_value_file(
    routes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = tmp_path / "value.json"
    value.write_bytes(b'{"payload": 7}')
    code = main(
        f"route {routes} --topic ledger --key-hex 616363742f37 --header kind=credit "
        f"--header delay=1s --value-file {value}".split()
    )
    assert code == 0
    ledger, audit = lines(capsys.readouterr().out)
    assert ledger["key"] == "acct/7"
    assert ledger["body"] == '{"payload": 7}'
    assert audit["body"] == "7"


def test_route_bad_key_hex_and_missing_value_file(
    routes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["route", str(routes), "--topic", "ledger", "--key-hex", "zz"])
    assert info.value.code == 2
    assert "argument --key-hex: not hex" in capsys.readouterr().err
    missing = tmp_path / "absent.json"
    assert main(["route", str(routes), "--topic", "ledger", "--value-file", str(missing)]) == 2
    assert capsys.readouterr().err == (f"--value-file {missing}: No such file or directory\n")


SCOPED = """\
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[restate]
ingress_url = "http://restate:8080"

[[routes]]
name = "tenants"
topic = "orders"
target = "object"
service = "Ledger"
handler = "append"
key = "{key}"
scope = "{header.tenant}"
limit_key = "{header.tenant}/{value.user}"

[[routes]]
name = "jobs"
topic = "orders"
target = "service"
service = "Jobs"
handler = "run"
scope = "batch"
rate_limit = 5
retry_on = [409]
"""


def test_check_says_what_scoped_routes_need_from_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(SCOPED, encoding="utf-8")
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"{path}: ok, 2 route(s)",
        "note: route 'tenants' sends scoped invocations: the Restate server needs "
        "experimental-enable-vqueues = true and experimental-enable-scoped-virtual-objects = true "
        "(Restate 1.7 answers 400 otherwise, and the bridge retries with the ingress marked down)",
        "note: route 'jobs' sends scoped invocations: the Restate server needs "
        "experimental-enable-vqueues = true (Restate 1.7 answers 400 otherwise, and the bridge "
        "retries with the ingress marked down)",
    ]


def test_route_shows_scope_and_limit_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(SCOPED, encoding="utf-8")
    argv = ["route", str(path), "--topic", "orders", "--key", "k1", "--header", "tenant=acme"]
    assert main([*argv, "--value", '{"user": "u7"}']) == 0
    tenants, jobs = lines(capsys.readouterr().out)
    assert tenants["url"] == "http://restate:8080/restate/scope/acme/send/Ledger/k1/append"
    assert (tenants["scope"], tenants["limit_key"]) == ("acme", "acme/u7")
    assert jobs["url"] == "http://restate:8080/restate/scope/batch/send/Jobs/run"
    assert jobs["scope"] == "batch"
    assert "limit_key" not in jobs
    assert main([*argv[:-2], "--header", "tenant=a b", "--value", "{}"]) == 0
    poison, _ = lines(capsys.readouterr().out)
    assert poison["route"] == "tenants"
    assert "scope 'a b' holds characters Restate refuses" in poison["dead_letter"]


async def test_sigusr1_names_where_each_task_waits(caplog: pytest.LogCaptureFixture) -> None:
    async def inner() -> None:
        await asyncio.sleep(30)

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer(), name="stuck-one")
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="bridge"):
        log_tasks()
    task.cancel()
    (line,) = [r.getMessage() for r in caplog.records if "SIGUSR1" in r.getMessage()]
    (stuck,) = [each for each in line.splitlines() if "stuck-one" in each]
    assert "outer (" in stuck
    assert stuck.index("outer (") < stuck.index("inner (") < stuck.index("sleep (")
