"""A real OpenID provider for the OAUTHBEARER tests: npm's ``oidc-provider`` (``oidc/server.mjs``)
with the client-credentials grant and JWT access tokens (RS256) for the resource ``urn:kafka``,
which Apache Kafka's ``OAuthBearerValidatorCallbackHandler`` validates against its JWKS.

Installed with the Restate server by ``tests/stack/install.py`` (``npm ci`` of package.json).
:meth:`OidcProvider.stop` and :meth:`OidcProvider.start` again serve on the same port with the
same signing key, so a test can take the provider away for a while.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from .install import STACK_DIR, ensure_oidc_provider
from .procs import Process, StackError, free_port

SERVER = STACK_DIR / "oidc" / "server.mjs"
RESOURCE = "urn:kafka"
"""The tokens' audience (``aud``), which the broker expects."""


class OidcProvider:
    """One provider on a free port; clients ``{client_id: client_secret}``."""

    def __init__(
        self,
        workdir: Path,
        *,
        token_ttl: int = 3600,
        clients: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.token_ttl = token_ttl
        self.clients = clients or {"restate-bridge": "oidc-client-P4nV7-secret"}
        self.process: Process | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def client_id(self) -> str:
        return next(iter(self.clients))

    @property
    def client_secret(self) -> str:
        return self.clients[self.client_id]

    @property
    def log_path(self) -> Path:
        return self.workdir / "oidc.log"

    def start(self, timeout: float = 30) -> None:
        ensure_oidc_provider()
        node = shutil.which("node")
        if node is None:
            raise StackError("node is needed for the OpenID provider (tests/stack/oidc)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.json"
        config.write_text(
            json.dumps(
                {
                    "issuer": self.issuer,
                    "port": self.port,
                    "clients": [
                        {"client_id": i, "client_secret": s} for i, s in self.clients.items()
                    ],
                    "resource": RESOURCE,
                    "tokenTTL": self.token_ttl,
                    "keysFile": str(self.workdir / "keys.json"),
                }
            )
        )
        self.process = Process("oidc-provider", [node, str(SERVER), str(config)], self.log_path)
        self.process.start()
        self.process.wait_until(self._answers, timeout, "serving its discovery document")

    def _answers(self) -> bool:
        with urllib.request.urlopen(self.discovery_url, timeout=1) as answer:
            return bool(answer.status == 200)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def tokens_issued(self) -> int:
        """How many tokens it issued so far (over restarts)."""
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count("token issued to ")
