"""A token provider for ``sasl_oauth_token_provider`` that overstates its tokens' lifetime.

It gets tokens from an OpenID provider with the client-credentials grant, and says each lives an
hour however short its JWT ``exp`` is: the bridge would not refresh it before the broker refuses
it, so only the bridge's noticing of the refusal brings the next token. Which provider it asks is
read for each token from the JSON file named by ``TEST_OIDC_PROVIDER_FILE``
(``{"token_endpoint": ..., "client_id": ..., "client_secret": ...}``): a test can switch the
bridge to a provider the broker does not trust while it runs.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

CLAIMED_LIFETIME = 3600.0


def use(path: Path, token_endpoint: str, client_id: str, client_secret: str) -> None:
    """Write the file the provider reads."""
    settings = {
        "token_endpoint": token_endpoint,
        "client_id": client_id,
        "client_secret": client_secret,
    }
    path.write_text(json.dumps(settings))


def factory() -> Callable[[], tuple[str, float]]:
    path = Path(os.environ["TEST_OIDC_PROVIDER_FILE"])

    def token() -> tuple[str, float]:
        settings = json.loads(path.read_text())
        pair = f"{settings['client_id']}:{settings['client_secret']}"
        request = urllib.request.Request(
            settings["token_endpoint"],
            data=b"grant_type=client_credentials",
            headers={
                "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
                "Accept": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            access_token = json.loads(answer.read())["access_token"]
        return access_token, time.time() + CLAIMED_LIFETIME

    return token
