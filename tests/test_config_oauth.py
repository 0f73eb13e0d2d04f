"""``check`` on OAUTHBEARER settings: one source of tokens, a client id and secret for a token
endpoint, no password, settings only where they are used, a provider that imports. Each
mistake at its line, exit 2 (``restate-bridge check``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import ConfigError, parse_config
from tests.stack.bridge_process import REPO_ROOT

PATH = Path("routes.toml")
HEAD = '[kafka]\nbootstrap_servers = "b:9092"\n'  # lines 1-2; the OAuth lines from 3
ROUTE = '\n[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
OAUTH = 'security_protocol = "SASL_SSL"\nsasl_mechanism = "OAUTHBEARER"\n'  # lines 3-4
ENDPOINT = (
    'sasl_oauth_token_endpoint_url = "https://id.example/token"\n'  # line 5
    'sasl_oauth_client_id = "bridge"\n'  # line 6
    'sasl_oauth_client_secret_env = "OAUTH_SECRET"\n'  # line 7
)
ENV = {"OAUTH_SECRET": "s3cr3t"}


def problems(kafka: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + kafka + ROUTE, PATH, ENV if env is None else env)
    return info.value.problems


def test_a_token_endpoint_with_client_credentials_loads() -> None:
    config = parse_config(HEAD + OAUTH + ENDPOINT + ROUTE, PATH, ENV)
    assert config.kafka.sasl_oauth_client_secret == "s3cr3t"
    assert "s3cr3t" not in repr(config)


def test_an_issuer_loads() -> None:
    text = ENDPOINT.replace("sasl_oauth_token_endpoint_url", "sasl_oauth_issuer_url")
    assert parse_config(HEAD + OAUTH + text + ROUTE, PATH, ENV).kafka.sasl_oauth_issuer_url


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        pytest.param(
            'sasl_mechanism = "OAUTHBEARER"\n' + ENDPOINT,
            "routes.toml:3: sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL, "
            "not PLAINTEXT",
            id="needs-a-sasl-protocol",
        ),
        pytest.param(
            OAUTH + ENDPOINT + 'sasl_oauth_issuer_url = "https://id.example"\n',
            "routes.toml:8: set one of sasl_oauth_token_endpoint_url or sasl_oauth_issuer_url, "
            "not both",
            id="two-sources",
        ),
        pytest.param(
            OAUTH + ENDPOINT + 'sasl_oauth_token_provider = "json:loads"\n',
            "routes.toml:8: set one of sasl_oauth_token_endpoint_url or "
            "sasl_oauth_token_provider, not both",
            id="endpoint-and-provider",
        ),
        pytest.param(
            OAUTH + ENDPOINT.replace('sasl_oauth_client_id = "bridge"\n', ""),
            "routes.toml:5: sasl_oauth_token_endpoint_url needs sasl_oauth_client_id",
            id="no-client-id",
        ),
        pytest.param(
            OAUTH + ENDPOINT.replace('sasl_oauth_client_secret_env = "OAUTH_SECRET"\n', ""),
            "routes.toml:5: sasl_oauth_token_endpoint_url needs sasl_oauth_client_secret_env or "
            "sasl_oauth_client_secret_file",
            id="no-secret",
        ),
        pytest.param(
            OAUTH + ENDPOINT + 'sasl_username = "bridge"\n',
            "routes.toml:8: sasl_mechanism OAUTHBEARER logs in with a token, not a password: "
            "sasl_username",
            id="a-password-too",
        ),
        pytest.param(
            'security_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\nsasl_username = "u"\n'
            'sasl_password_env = "OAUTH_SECRET"\nsasl_oauth_scope = "kafka"\n',
            "routes.toml:7: sasl_oauth_scope is only used with sasl_mechanism OAUTHBEARER",
            id="oauth-key-with-plain",
        ),
        pytest.param(
            OAUTH + 'sasl_oauth_token_endpoint_url = "ftp://id.example/token"\n'
            'sasl_oauth_client_id = "b"\nsasl_oauth_client_secret_env = "OAUTH_SECRET"\n',
            "routes.toml:5: sasl_oauth_token_endpoint_url must start with http:// or https://",
            id="not-an-http-url",
        ),
        pytest.param(
            OAUTH + ENDPOINT + 'sasl_oauth_cafile = "/nonexistent/ca.pem"\n',
            "routes.toml:8: sasl_oauth_cafile: no such file '/nonexistent/ca.pem'",
            id="no-cafile",
        ),
        pytest.param(
            OAUTH + ENDPOINT + 'sasl_oauth_extensions = ["auth=x"]\n',
            "routes.toml:8: sasl_oauth_extensions: the key 'auth' must be letters only, not 'auth'",
            id="bad-extension",
        ),
        pytest.param(
            OAUTH + 'sasl_oauth_token_provider = "no_such_module_x:factory"\n',
            "routes.toml:5: sasl_oauth_token_provider: cannot import 'no_such_module_x': "
            "ModuleNotFoundError: No module named 'no_such_module_x'",
            id="provider-not-importable",
        ),
        pytest.param(
            OAUTH + 'sasl_oauth_token_provider = "json:no_such_factory"\n',
            "routes.toml:5: sasl_oauth_token_provider: 'json' has no 'no_such_factory'",
            id="provider-not-there",
        ),
        pytest.param(
            OAUTH + 'sasl_oauth_token_provider = "json.loads"\n',
            "routes.toml:5: sasl_oauth_token_provider must be 'package.module:factory', "
            "not 'json.loads'",
            id="provider-spelling",
        ),
        pytest.param(
            OAUTH + 'sasl_oauth_token_provider = "json:loads"\nsasl_oauth_client_id = "x"\n',
            "routes.toml:6: sasl_oauth_client_id is for a token endpoint, not "
            "sasl_oauth_token_provider",
            id="endpoint-setting-with-provider",
        ),
    ],
)
def test_mistakes(kafka: str, expected: str) -> None:
    assert problems(kafka) == [expected]


def test_the_secrets_variable_must_be_set() -> None:
    assert problems(OAUTH + ENDPOINT, env={}) == [
        "$OAUTH_SECRET: unset or empty, but [kafka] "
        "sasl_oauth_client_secret_env names it as the OAuth client secret"
    ]


def test_check_exits_2_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(HEAD + OAUTH + ROUTE)
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "check", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"{path}:4: sasl_mechanism OAUTHBEARER needs sasl_oauth_token_endpoint_url" in (
        done.stderr
    )
