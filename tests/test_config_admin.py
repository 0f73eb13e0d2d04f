"""``[restate] admin_url`` and its token: read, overridden by the environment, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, parse_config

BASE = '[kafka]\nbootstrap_servers = "localhost:9092"\n'
PATH = Path("routes.toml")
ROUTE = '\n[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'


def restate(lines: str, env: dict[str, str] | None = None) -> object:
    return parse_config(f"{BASE}[restate]\n{lines}{ROUTE}", PATH, env or {}).restate


def test_no_admin_url_by_default() -> None:
    config = parse_config(BASE + ROUTE, PATH, {})
    assert config.restate.admin_url is None
    assert config.restate.admin_token is None


def test_the_file_and_the_environment() -> None:
    got = restate('admin_url = "http://restate:9070"\n')
    assert got.admin_url == "http://restate:9070"
    env = {"RESTATE_ADMIN_URL": "https://admin.example:9070"}
    assert restate('admin_url = "http://restate:9070"\n', env).admin_url == (
        "https://admin.example:9070"
    )
    assert parse_config(BASE + ROUTE, PATH, env).restate.admin_url == "https://admin.example:9070"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"restate:9070"', "routes.toml:4: admin_url must start with http:// or https://"),
        ('"http://:9070"', "routes.toml:4: admin_url 'http://:9070' has no host"),
        ('"http://h:99999"', "routes.toml:4: admin_url 'http://h:99999': Port out of range"),
        ("9070", "routes.toml:4: admin_url must be a URL 'http(s)://host:9070'"),
    ],
)
def test_a_bad_admin_url_is_reported_at_its_line(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        restate(f"admin_url = {value}\n")
    assert [p[: len(problem)] for p in info.value.problems] == [problem]


def test_a_bad_admin_url_from_the_environment() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + ROUTE, PATH, {"RESTATE_ADMIN_URL": "ftp://x"})
    assert info.value.problems == [
        "$RESTATE_ADMIN_URL: admin_url must start with http:// or https://"
    ]


def test_the_admin_token_defaults_to_the_ingress_token() -> None:
    env = {"RESTATE_AUTH_TOKEN": "ingress-secret", "ADMIN": "admin-secret"}
    assert restate('admin_url = "http://r:9070"\n', env).admin_token == "ingress-secret"
    own = restate('admin_url = "http://r:9070"\nadmin_token_env = "ADMIN"\n', env)
    assert own.admin_token == "admin-secret"
    assert own.token == "ingress-secret"
    assert "secret" not in repr(own)


def test_an_unset_admin_token_variable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        restate('admin_token_env = "NOPE"\n')
    assert info.value.problems == [
        "$NOPE: unset or empty, but [restate] admin_token_env names it as the admin API's token"
    ]
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    got = restate(f'admin_token_file = "{secret}"\n')
    assert got.admin_token == "from-a-file"
    with pytest.raises(ConfigError) as info:
        restate(f'admin_token_file = "{secret}"\nadmin_token_env = "X"\n', {"X": "y"})
    assert (
        "set admin_token_env or admin_token_file (the admin API's token), not both"
        in (info.value.problems[0])
    )


def test_validate_input_needs_the_admin_api() -> None:
    route = ROUTE + "validate_input = true\n"
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + route, PATH, {})
    assert info.value.problems == [
        "routes.toml:9: validate_input = true reads the handlers' input schemas from Restate's "
        "admin API: add [restate] admin_url (or set RESTATE_ADMIN_URL)"
    ]
    config = parse_config(BASE + route, PATH, {"RESTATE_ADMIN_URL": "http://r:9070"})
    assert config.routes[0].validate_input
