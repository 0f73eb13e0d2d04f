"""An Apache Kafka broker that logs clients in with OAUTHBEARER tokens of an OpenID provider.

Listeners besides PLAINTEXT (setup and checks):

=============  ==============  ================================================================
listener       protocol        what it proves
=============  ==============  ================================================================
``OAUTH``      SASL_PLAINTEXT  OAUTHBEARER, the JWT checked by Kafka's validator
``OAUTH_SSL``  SASL_SSL        the same over TLS (a server certificate from the test's CA)
=============  ==============  ================================================================

Kafka's ``OAuthBearerValidatorCallbackHandler`` checks each token's signature against the
provider's JWKS (Kafka 4 reads only URLs allowed by the JVM property
``org.apache.kafka.sasl.oauthbearer.allowed.urls``), its issuer, audience and expiry. With
``reauth_ms`` the broker ends each session after that long (``connections.max.reauth.ms``):
aiokafka does not re-authenticate in place, so the connection closes and is made again with the
current token.
"""

from __future__ import annotations

from pathlib import Path

from .apache_kafka import ApacheKafkaBroker, Listener
from .oidc import RESOURCE, OidcProvider
from .tls import Certificates, make_certificates

VALIDATOR = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
LOGIN_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required ;"


def _oauth(oidc: OidcProvider, reauth_ms: int | None) -> dict[str, str]:
    settings = {
        "sasl.enabled.mechanisms": "OAUTHBEARER",
        "oauthbearer.sasl.jaas.config": LOGIN_MODULE,
        "oauthbearer.sasl.server.callback.handler.class": VALIDATOR,
        "oauthbearer.sasl.oauthbearer.jwks.endpoint.url": oidc.jwks_uri,
        "oauthbearer.sasl.oauthbearer.expected.issuer": oidc.issuer,
        "oauthbearer.sasl.oauthbearer.expected.audience": RESOURCE,
    }
    if reauth_ms is not None:
        settings["oauthbearer.connections.max.reauth.ms"] = str(reauth_ms)
    return settings


def oauth_broker(
    workdir: Path, oidc: OidcProvider, *, reauth_ms: int | None = None
) -> tuple[ApacheKafkaBroker, Certificates]:
    """An unstarted broker with the listeners above (the provider must be known: its URLs go
    into the broker's settings), and the certificates made for it."""
    certs = make_certificates(workdir / "certs")
    tls = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.server.combined),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca),
    }
    listeners = [
        Listener("OAUTH", "SASL_PLAINTEXT", _oauth(oidc, reauth_ms)),
        Listener("OAUTH_SSL", "SASL_SSL", {**tls, **_oauth(oidc, reauth_ms)}),
    ]
    broker = ApacheKafkaBroker(
        workdir,
        listeners=listeners,
        # the validator's settings are read from the broker's too; set both to be sure
        settings={
            "sasl.oauthbearer.jwks.endpoint.url": oidc.jwks_uri,
            "sasl.oauthbearer.expected.issuer": oidc.issuer,
            "sasl.oauthbearer.expected.audience": RESOURCE,
        },
        system_properties={"org.apache.kafka.sasl.oauthbearer.allowed.urls": oidc.jwks_uri},
    )
    return broker, certs
