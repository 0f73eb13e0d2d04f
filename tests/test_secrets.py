"""Secrets from the environment or from files, resolved once by the loader; the ingress token
file watched; the client's token replaced under way. No secret in any message or ``repr``."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.cli import main
from bridge.config import BridgeConfig, ConfigError, parse_config, read_secret_file
from bridge.deliver.decisions import Attempts, Policy, Retry, after_send_failure
from bridge.ingress import Client
from bridge.ingress._codec import error_from_response
from bridge.secrets import TokenFile

PATH = Path("routes.toml")
SECRET = "Sx-7f3c-unique-secret-value"
ROUTE = '[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
SASL = 'security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\nsasl_username = "u"\n'


def config(tables: str, env: dict[str, str] | None = None) -> BridgeConfig:
    """``tables`` from line 3, after ``[kafka]`` and ``bootstrap_servers``."""
    text = f'[kafka]\nbootstrap_servers = "b:9092"\n{tables}\n{ROUTE}'
    return parse_config(text, PATH, env or {})


def problems(tables: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(tables, env)
    for problem in info.value.problems:
        assert SECRET not in problem
    return info.value.problems


def secret_file(tmp_path: Path, content: bytes = SECRET.encode() + b"\n") -> Path:
    path = tmp_path / "secret"
    path.write_bytes(content)
    return path


def certificate(tmp_path: Path) -> Path:
    ca = trustme.CA()
    cert = tmp_path / "client.pem"
    ca.issue_cert("client.test").private_key_and_cert_chain_pem.write_to_path(str(cert))
    return cert


# (tables before the secret's own line, the table it is in, the option's stem, the field)
SECRETS = {
    "sasl": (SASL, "", "sasl_password", lambda c: c.kafka.sasl_password),
    "ssl": (
        'security_protocol = "SSL"\nssl_certfile = "{cert}"\n',
        "",
        "ssl_password",
        lambda c: c.kafka.ssl_password,
    ),
    "ingress": ("", "[restate]\n", "token", lambda c: c.restate.token),
    "listener": ("", "[metrics]\n", "token", lambda c: c.metrics.token),
}


@pytest.mark.parametrize("kind", SECRETS)
@pytest.mark.parametrize("source", ["env", "file"])
def test_every_secret_comes_from_a_variable_or_a_file(
    kind: str, source: str, tmp_path: Path
) -> None:
    before, table, stem, read = SECRETS[kind]
    before = before.format(cert=certificate(tmp_path))
    if source == "env":
        line, env = f'{stem}_env = "MY_SECRET"\n', {"MY_SECRET": SECRET}
    else:
        line, env = f'{stem}_file = "{secret_file(tmp_path)}"\n', {}
    loaded = config(before + table + line, env)
    assert read(loaded) == SECRET
    assert SECRET not in repr(loaded)
    assert SECRET not in str(loaded)


@pytest.mark.parametrize("kind", SECRETS)
def test_a_secret_from_both_a_variable_and_a_file_is_refused_at_the_file_line(
    kind: str, tmp_path: Path
) -> None:
    before, table, stem, _ = SECRETS[kind]
    before = before.format(cert=certificate(tmp_path))
    tables = before + table + f'{stem}_env = "MY_SECRET"\n{stem}_file = "{secret_file(tmp_path)}"\n'
    line = tables.count("\n") + 2  # the file option is the last line of tables (from line 3)
    [problem] = problems(tables, {"MY_SECRET": SECRET})
    assert problem.startswith(f"routes.toml:{line}: set {stem}_env or {stem}_file (")
    assert problem.endswith("not both")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (SECRET.encode() + b"\nsecond line\n", "holds control characters or more than one line"),
        (b"\xff" + SECRET.encode(), "is not UTF-8 text"),
    ],
)
def test_a_secret_file_that_cannot_be_used_is_reported_at_its_option(
    content: bytes, why: str, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, content)
    assert problems(f'[restate]\ntoken_file = "{path}"\n') == [
        f"routes.toml:4: token_file: {str(path)!r} {why}"
    ]


def test_a_missing_or_unreadable_secret_file_is_reported_at_its_option(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert problems(f'[metrics]\ntoken_file = "{missing}"\n') == [
        f"routes.toml:4: token_file: cannot read {str(missing)!r}: No such file or directory"
    ]
    assert problems(SASL + f'sasl_password_file = "{tmp_path}"\n') == [
        f"routes.toml:6: sasl_password_file: cannot read {str(tmp_path)!r}: Is a directory"
    ]


def test_check_and_run_report_a_bad_secret_file_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[kafka]\nbootstrap_servers = "b:9092"\n[restate]\ntoken_file = "{tmp_path / "nope"}"\n'
        f"{ROUTE}"
    )
    for command in (["check", str(routes)], ["run", "--routes", str(routes)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{routes}:4: token_file: cannot read ")


def test_the_kubernetes_convention_strips_one_trailing_newline(tmp_path: Path) -> None:
    assert read_secret_file(str(secret_file(tmp_path, b"abc\n"))) == "abc"
    assert read_secret_file(str(secret_file(tmp_path, b"abc\r\n"))) == "abc"
    assert read_secret_file(str(secret_file(tmp_path, b"abc"))) == "abc"
    assert read_secret_file(str(secret_file(tmp_path, b" a b\t"))) == " a b\t"


def test_an_unset_variable_is_named_and_restate_auth_token_is_the_default(tmp_path: Path) -> None:
    assert problems('[restate]\ntoken_env = "INGRESS_TOKEN"\n') == [
        "$INGRESS_TOKEN: unset or empty, but [restate] token_env names it as the ingress token"
    ]
    assert config("", {"RESTATE_AUTH_TOKEN": SECRET}).restate.token == SECRET
    named = config('[restate]\ntoken_env = "T"\n', {"T": "mine", "RESTATE_AUTH_TOKEN": SECRET})
    assert named.restate.token == "mine"
    path = secret_file(tmp_path)
    from_file = config(f'[restate]\ntoken_file = "{path}"\n', {"RESTATE_AUTH_TOKEN": "other"})
    assert from_file.restate.token == SECRET
    assert from_file.restate.token_file == str(path)
    assert config("").metrics.token is None


def test_a_secret_with_a_line_break_in_a_variable_is_refused_without_its_value() -> None:
    [problem] = problems("", {"RESTATE_AUTH_TOKEN": SECRET + "\r\nX-Evil: 1"})
    assert problem == "$RESTATE_AUTH_TOKEN: holds control characters; the ingress token is one line"


def test_secret_options_only_where_they_are_used(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    assert problems(f'sasl_password_file = "{path}"\n') == [
        "routes.toml:3: sasl_password_file is only used with sasl_mechanism"
    ]
    assert problems('security_protocol = "SSL"\nssl_password_env = "P"\n', {"P": "x"}) == [
        "routes.toml:4: ssl_password_env is a client key's passphrase; set ssl_certfile"
    ]
    assert problems(f'[restate]\nca_file = "{path}"\n') == [
        "routes.toml:4: ca_file is only used with an https:// ingress_url"
    ]
    https = '[restate]\ningress_url = "https://restate.test"\n'
    assert problems(https + f'key_file = "{path}"\n') == [
        "routes.toml:5: key_file needs cert_file (the client certificate)"
    ]
    [bad] = problems(https + f'ca_file = "{path}"\n')
    assert bad.startswith("routes.toml:5: TLS files do not load: ")


def test_an_encrypted_client_key_loads_with_its_passphrase(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    leaf = ca.issue_cert("client.test")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(SECRET.encode()),
    )
    (tmp_path / "key.pem").write_bytes(encrypted)
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    tables = (
        f'security_protocol = "SSL"\nssl_certfile = "{tmp_path / "cert.pem"}"\n'
        f'ssl_keyfile = "{tmp_path / "key.pem"}"\n'
    )
    assert config(tables + 'ssl_password_env = "P"\n', {"P": SECRET}).kafka.ssl_password == SECRET
    [wrong] = problems(tables + 'ssl_password_env = "P"\n', {"P": "wrong"})
    assert wrong.startswith("routes.toml:3: TLS files do not load")
    [none] = problems(tables)  # no passphrase: an error, never a prompt on the terminal
    assert none.startswith("routes.toml:3: TLS files do not load")


# -- the client's token ---------------------------------------------------------------------


@pytest.fixture
async def echo() -> object:
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"invocationId": "inv_1", "status": "Accepted"}, status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    server = TestServer(app)
    await server.start_server()
    yield server, seen
    await server.close()


async def test_set_token_applies_to_the_next_request_and_never_shows(echo: object) -> None:
    server, seen = echo  # type: ignore[misc]
    async with Client(str(server.make_url("")), token=SECRET) as client:
        assert SECRET not in repr(client)
        target = client.service("S", "h")
        await target.send(b"{}", headers={"Authorization": "Bearer from-a-record"})
        client.set_token("rotated")
        await target.send(b"{}")
        client.set_token(None)
        await target.send(b"{}", headers={"authorization": "Bearer from-a-record"})
    assert seen == [f"Bearer {SECRET}", "Bearer rotated", None]


def test_a_refused_token_is_retried_and_pauses_fetching_not_a_dead_letter() -> None:
    for status in (401, 403):
        error = error_from_response(
            status,
            b'{"message": "bad token"}',
            source_header=None,
            retry_after=None,
            invocation_id=None,
        )
        assert error.retryable
        decision = after_send_failure(error, Attempts(), 0.0, Policy(), random.Random(1))
        assert isinstance(decision, Retry)
        assert decision.ingress_down
    handler_said = error_from_response(
        401, b"{}", source_header="invocation", retry_after=None, invocation_id=None
    )
    assert not handler_said.retryable  # a handler's own 401 is the record's answer


# -- the token file ---------------------------------------------------------------------------


def test_the_token_file_is_applied_when_it_changes_and_logged_without_its_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = secret_file(tmp_path, b"first\n")
    applied: list[str] = []
    watcher = TokenFile(str(path), applied.append, current="first")
    assert not watcher.check()
    path.write_text(SECRET + "\n")
    assert watcher.check()
    assert not watcher.check()
    path.unlink()  # a rotation in progress: keep the token, warn once
    assert not watcher.check()
    assert not watcher.check()
    path.write_text("")
    assert not watcher.check()
    path.write_text("third")
    assert watcher.check()
    assert applied == [SECRET, "third"]
    messages = [r.getMessage() for r in caplog.records]
    assert f"ingress token reloaded from {path}" in messages
    assert sum("No such file" in m for m in messages) == 1
    assert not any(SECRET in m or "third" in m or "first" in m for m in messages)
    assert SECRET not in repr(watcher)
