"""examples/msk_iam.py wired as ``sasl_oauth_token_provider``, with the real signer
(``aws-msk-iam-sasl-signer-python``) and fixed, fake credentials: the token the bridge would log
in with is a presigned ``kafka-cluster:Connect`` request for the region, valid 15 minutes. It was
not run against Amazon MSK here."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.config import load_config
from bridge.consume.oauth import make_login

FAKE_KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))  # no profile from the machine
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


async def test_the_msk_provider_gives_a_signed_token_and_its_expiry(
    aws: None, tmp_path: Path
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = "b-1.c.abc.c2.kafka.eu-west-1.amazonaws.com:9098"\n'
        'security_protocol = "SASL_SSL"\nsasl_mechanism = "OAUTHBEARER"\n'
        'sasl_oauth_token_provider = "examples.msk_iam:provider"\n'
        '[[routes]]\ntopic = "t"\ntarget = "service"\nservice = "S"\nhandler = "h"\n'
    )
    login = make_login(load_config(path, {}).kafka)
    assert login is not None
    await login.start()
    try:
        token = await login.token()
        assert login.expires_at is not None
        assert 14 * 60 < login.expires_at - time.time() <= 15 * 60
    finally:
        await login.aclose()
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.netloc == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith(f"{FAKE_KEY}/")
    assert "/eu-west-1/kafka-cluster/aws4_request" in query["X-Amz-Credential"][0]
    assert query["X-Amz-Expires"] == ["900"]


async def test_without_a_region_the_provider_says_so(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    from bridge.consume.oauth import ProviderSource

    problem = await ProviderSource("examples.msk_iam:provider").fetch(0)
    assert "set AWS_REGION to the MSK cluster's region" in str(problem)
