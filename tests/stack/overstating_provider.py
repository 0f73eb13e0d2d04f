"""A token provider for ``sasl_oauth_token_provider`` that overstates its tokens' lifetime.

It gets tokens from the test's OpenID provider with the client-credentials grant, and says each
lives an hour however short its JWT ``exp`` is: the bridge would not refresh it before the broker
refuses it, so only the bridge's noticing of the refusal brings the next token. The provider is
named by ``TEST_OIDC_TOKEN_ENDPOINT``, ``TEST_OIDC_CLIENT_ID`` and ``TEST_OIDC_CLIENT_SECRET``.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from collections.abc import Callable

CLAIMED_LIFETIME = 3600.0


def factory() -> Callable[[], tuple[str, float]]:
    endpoint = os.environ["TEST_OIDC_TOKEN_ENDPOINT"]
    pair = f"{os.environ['TEST_OIDC_CLIENT_ID']}:{os.environ['TEST_OIDC_CLIENT_SECRET']}"
    basic = "Basic " + base64.b64encode(pair.encode()).decode()

    def token() -> tuple[str, float]:
        request = urllib.request.Request(
            endpoint,
            data=b"grant_type=client_credentials",
            headers={"Authorization": basic, "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            access_token = json.loads(answer.read())["access_token"]
        return access_token, time.time() + CLAIMED_LIFETIME

    return token
