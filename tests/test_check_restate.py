"""``restate-bridge check --restate-admin``: routes against the services a real Restate has
registered, and the topics' retention (read from the real broker) against Restate's, on both
brokers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bridge.cli import main
from tests.helpers import unique
from tests.stack.brokers import Broker
from tests.stack.kafka_io import create_topics
from tests.stack.procs import free_port
from tests.stack.restate import RestateServer

pytestmark = pytest.mark.integration

HOUR_MS = str(3600 * 1000)


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RESTATE_URL", "RESTATE_ADMIN_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)


def route(topic: str, target: str, service: str, handler: str, name: str) -> str:
    key = 'key = "{key}"\n' if target != "service" else ""
    return (
        f'\n[[routes]]\nname = "{name}"\ntopic = "{topic}"\ntarget = "{target}"\n'
        f'service = "{service}"\nhandler = "{handler}"\n{key}'
    )


def write(tmp_path: Path, broker: Broker, *routes: str, restate: str = "") -> Path:
    path = tmp_path / "routes.toml"
    text = f'[kafka]\nbootstrap_servers = "{broker.bootstrap_servers}"\n{restate}'
    path.write_text(text + "".join(routes))
    return path


def line_of(path: Path, name: str) -> int:
    return (
        path.read_text()
        .splitlines()
        .index("[[routes]]", path.read_text().splitlines().index(f'name = "{name}"') - 1)
        + 1
    )


def test_routes_that_fit_pass_and_a_topic_kept_longer_than_the_keys_is_a_warning(
    broker: Broker, restate: RestateServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short, long = unique("chk-short"), unique("chk-long")
    # an hour of records for a service that remembers keys for an hour; a week (the broker's
    # default) for one that remembers them for a day
    asyncio.run(create_topics(broker.bootstrap_servers, [short], configs={"retention.ms": HOUR_MS}))
    asyncio.run(create_topics(broker.bootstrap_servers, [long]))
    path = write(
        tmp_path,
        broker,
        route(short, "service", "Forgetful", "note", "short"),
        route(long, "object", "Recorder", "record", "long"),
        route(long, "workflow", "Signup", "run", "flow"),
    )
    code = main(["check", str(path), "--restate-admin", restate.admin_url])
    out, err = capsys.readouterr()
    assert f"{path}: ok, 3 route(s), checked against Restate at {restate.admin_url}" in out
    if broker.name == "tansu":  # tansu 0.6.0 answers DescribeConfigs with the configs set only
        assert code == 0, err
        assert err == ""
        assert f"note: topic retention not compared for {long!r}: the broker did not say" in out
        assert main(["check", str(path), "--restate-admin", restate.admin_url, "--strict"]) == 0
        return
    assert code == 0, err
    warnings = err.splitlines()
    assert warnings == [
        f"{path}:{line_of(path, 'long')}: warning: route 'long': Restate remembers 'Recorder''s "
        f"idempotency keys for 1d, but topic {long!r} keeps records for 7d: a record older than "
        "1d that is read again (an offset reset, a restore) runs again",
        f"{path}:{line_of(path, 'flow')}: warning: route 'flow': Restate remembers 'Signup''s "
        f"idempotency keys for 1d, but topic {long!r} keeps records for 7d: a record older than "
        "1d that is read again (an offset reset, a restore) runs again",
    ]
    assert main(["check", str(path), "--restate-admin", restate.admin_url, "--strict"]) == 2


def test_each_mismatch_is_reported_at_its_route(
    broker: Broker, restate: RestateServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique("chk-bad")
    path = write(
        tmp_path,
        broker,
        route(topic, "service", "Greeter", "greet", "fine"),
        route(topic, "service", "Greter", "greet", "typo"),
        route(topic, "object", "Greeter", "greet", "kind"),
        route(topic, "service", "Greeter", "gret", "handler"),
        route(topic, "service", "Greeter", "internal", "private"),
    )
    assert main(["check", str(path), "--restate-admin", restate.admin_url]) == 2
    out, err = capsys.readouterr()
    assert ": ok," not in out
    problems = [line for line in err.splitlines() if "warning" not in line]
    at = {
        name: f"{path}:{line_of(path, name)}: route {name!r}: "
        for name in ("typo", "kind", "handler", "private")
    }
    assert problems == [
        at["typo"]
        + "service 'Greter' is not registered (did you mean 'Greeter'?); registered: "
        + problems[0].split("registered: ")[-1],
        at["kind"] + "target = \"object\" needs a VirtualObject, but 'Greeter' is a Service: "
        'write target = "service"',
        at["handler"]
        + "'Greeter' has no handler 'gret' (did you mean 'greet'?); it has: "
        + problems[2].split("it has: ")[-1],
        at["private"] + "Greeter/internal is not public: the ingress refuses it (make it public, "
        "or route to a public handler)",
    ]
    assert "Greeter, " in problems[0]
    # without the admin API nothing of this is known: the file itself is fine
    assert main(["check", str(path)]) == 0


def test_the_admin_url_from_the_file_or_the_environment(
    broker: Broker,
    restate: RestateServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = unique("chk-env")
    typo = route(topic, "service", "Greter", "greet", "typo")
    in_file = write(
        tmp_path, broker, typo, restate=f'[restate]\nadmin_url = "{restate.admin_url}"\n'
    )
    assert main(["check", str(in_file)]) == 2
    assert "service 'Greter' is not registered" in capsys.readouterr().err
    plain = write(tmp_path, broker, typo)
    monkeypatch.setenv("RESTATE_ADMIN_URL", restate.admin_url)
    assert main(["check", str(plain)]) == 2
    assert "service 'Greter' is not registered" in capsys.readouterr().err


def test_an_unreachable_admin_api_checks_nothing_and_says_so(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, broker, route(unique("chk-down"), "service", "Greeter", "greet", "r"))
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["check", str(path), "--restate-admin", url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        f"{path}: cannot check the routes against Restate: Restate admin API at {url}: "
    )


def test_route_shows_what_run_would_do_given_the_registry(
    broker: Broker, restate: RestateServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique("chk-route")
    greet = route(topic, "service", "Greeter", "greet", "greet") + "validate_input = true\n"
    path = write(
        tmp_path,
        broker,
        greet,
        route(topic, "service", "Greter", "greet", "typo"),
        restate=f'[restate]\nadmin_url = "{restate.admin_url}"\n',
    )
    assert main(["route", str(path), "--topic", topic, "--value", "42"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["route"], d.get("dead_letter"), d.get("waits")) for d in lines] == [
        ("greet", "input refused by Greeter/greet's schema: $: 42 is not of type 'string'", None),
        ("typo", None, [lines[1]["waits"][0]]),
    ]
    assert "service 'Greter' is not registered" in lines[1]["waits"][0]
    assert main(["route", str(path), "--topic", topic, "--value", '"Ada"']) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "dead_letter" not in first
    assert first["body"] == '"Ada"'
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["route", str(path), "--topic", topic, "--value", "1", "--restate-admin", url]) == 1
    assert "cannot read Restate's registry" in capsys.readouterr().err
    # the file's admin_url unreachable: the plan is still printed, without the registry's say
    offline = write(tmp_path, broker, greet, restate=f'[restate]\nadmin_url = "{url}"\n')
    assert main(["route", str(offline), "--topic", topic, "--value", "1"]) == 0
    out, err = capsys.readouterr()
    assert "cannot read Restate's registry" in err
    assert json.loads(out.splitlines()[0])["route"] == "greet"
