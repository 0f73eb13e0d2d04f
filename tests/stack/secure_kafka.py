"""One Apache Kafka broker with a listener for every security setup the bridge supports.

Beside PLAINTEXT (readiness, admin, producing test records) it listens with:

=============  ==============  =====================================================
listener       protocol        what it proves
=============  ==============  =====================================================
``SSL``        SSL             TLS with a server certificate from the test's CA
``MTLS``       SSL             the same, and a client certificate is required
``SASL``       SASL_PLAINTEXT  PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
``SASL_SSL``   SASL_SSL        the same mechanisms over TLS
``WRONGHOST``  SSL             a certificate for another host name (must be refused)
``EXPIRED``    SSL             a certificate that expired yesterday (must be refused)
=============  ==============  =====================================================

PLAIN users live in the listeners' JAAS configuration; SCRAM users are written into the cluster
metadata by ``kafka-storage format --add-scram`` (Kafka's own tooling) before the broker starts.
"""

from __future__ import annotations

from pathlib import Path

from .apache_kafka import ApacheKafkaBroker, Listener
from .tls import Certificates, Keystore, make_certificates

USER = "bridge-user"
PASSWORDS = {
    "PLAIN": "plain-pw-3b9d1e",
    "SCRAM-SHA-256": "scram256-pw-8c2f4a",
    "SCRAM-SHA-512": "scram512-pw-51e07d",
}
"""The user's password per SASL mechanism (distinct, so a test proves it used the right one)."""
MECHANISMS = tuple(PASSWORDS)


def _tls(keystore: Keystore, certificates: Certificates) -> dict[str, str]:
    return {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore.combined),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certificates.ca),
    }


def _sasl() -> dict[str, str]:
    plain = f'user_{USER}="{PASSWORDS["PLAIN"]}"'
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        "sasl.enabled.mechanisms": ",".join(MECHANISMS),
        "plain.sasl.jaas.config": (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};"
        ),
        "scram-sha-256.sasl.jaas.config": scram,
        "scram-sha-512.sasl.jaas.config": scram,
    }


def secure_broker(workdir: Path) -> tuple[ApacheKafkaBroker, Certificates]:
    """An unstarted broker with the listeners above, and the certificates made for it."""
    certs = make_certificates(workdir / "certs")
    listeners = [
        Listener("SSL", "SSL", _tls(certs.server, certs)),
        Listener("MTLS", "SSL", {**_tls(certs.server, certs), "ssl.client.auth": "required"}),
        Listener("SASL", "SASL_PLAINTEXT", _sasl()),
        Listener("SASL_SSL", "SASL_SSL", {**_tls(certs.server, certs), **_sasl()}),
        Listener("WRONGHOST", "SSL", _tls(certs.wrong_host, certs)),
        Listener("EXPIRED", "SSL", _tls(certs.expired, certs)),
    ]
    scram = [f"{m}=[name={USER},password={PASSWORDS[m]}]" for m in MECHANISMS if m != "PLAIN"]
    return ApacheKafkaBroker(workdir, listeners=listeners, scram=scram), certs
