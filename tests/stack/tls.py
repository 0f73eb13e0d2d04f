"""Certificates made by the tests (never committed): a CA, server and client certificates, PEM.

:func:`make_certificates` writes everything into one directory: the broker reads PEM keystores
(``ssl.keystore.type=PEM``, no keytool), the bridge reads the CA file and its client certificate.
Besides the good server certificate it makes the bad ones the failure tests need: one for another
host name, one that expired yesterday, and a CA the bridge does not trust.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

SERVER_NAMES = ("localhost", "127.0.0.1")
KEY_PASSPHRASE = "client-key-passphrase-7f3a"
"""The passphrase of the encrypted copy of the client key (``kafka.ssl_password`` tests)."""


@dataclass(frozen=True)
class Keystore:
    """A certificate chain and its unencrypted PKCS#8 key, as files."""

    cert: Path
    key: Path
    combined: Path
    """Key and chain in one file: a broker's ``ssl.keystore.location`` with type PEM."""


@dataclass(frozen=True)
class Certificates:
    ca: Path
    """The CA every good certificate comes from (broker and bridge trust it)."""
    untrusted_ca: Path
    """Another CA: a bridge trusting only this one refuses the broker."""
    server: Keystore
    """For ``localhost`` and ``127.0.0.1``."""
    wrong_host: Keystore
    """For ``wrong-host.invalid`` only, from the good CA."""
    expired: Keystore
    """For ``localhost`` and ``127.0.0.1``, from the good CA, expired yesterday."""
    client: Keystore
    """The bridge's certificate for the mTLS listener, from the good CA."""
    client_encrypted_key: Path
    """The client key encrypted with :data:`KEY_PASSPHRASE` (PKCS#8)."""


def _pkcs8(cert: trustme.LeafCert, password: str | None = None) -> bytes:
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        encryption = serialization.BestAvailableEncryption(password.encode())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _write(directory: Path, name: str, cert: trustme.LeafCert) -> Keystore:
    chain = b"".join(pem.bytes() for pem in cert.cert_chain_pems)
    key = _pkcs8(cert)
    paths = Keystore(
        directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.keystore.pem"
    )
    paths.cert.write_bytes(chain)
    paths.key.write_bytes(key)
    paths.combined.write_bytes(key + chain)
    for path in (paths.key, paths.combined):
        path.chmod(0o600)
    return paths


def make_certificates(directory: Path) -> Certificates:
    """A fresh CA and every certificate the Kafka security tests use, written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(organization_name="bridge test CA"), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    other.cert_pem.write_to_path(str(directory / "untrusted-ca.crt"))
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue_cert(
        *SERVER_NAMES,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    client = ca.issue_cert("restate-bridge")
    encrypted = directory / "client.encrypted.key"
    encrypted.write_bytes(_pkcs8(client, KEY_PASSPHRASE))
    encrypted.chmod(0o600)
    return Certificates(
        ca=directory / "ca.crt",
        untrusted_ca=directory / "untrusted-ca.crt",
        server=_write(directory, "server", ca.issue_cert(*SERVER_NAMES)),
        wrong_host=_write(directory, "wrong-host", ca.issue_cert("wrong-host.invalid")),
        expired=_write(directory, "expired", expired),
        client=_write(directory, "client", client),
        client_encrypted_key=encrypted,
    )
