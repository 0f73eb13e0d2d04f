"""Installs what the stack runs, once: the Restate server and an OpenID provider
(``oidc-provider``) from npm (Kafka's jars: apache_kafka.py, Apicurio Registry: registry.py, Helm
for the chart tests: helm.py).

Called by the fixtures and benchmarks, so a fresh clone needs nothing but ``make test``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STACK_DIR = Path(__file__).resolve().parent
RESTATE_BIN = STACK_DIR / "node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"


@contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Serialise installs between concurrent processes (tests, benchmarks, the demo)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_restate_server() -> Path:
    """The restate-server binary pinned in package.json, installed with ``npm ci`` if missing."""
    if RESTATE_BIN.exists():
        return RESTATE_BIN
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to install the Restate server (tests/stack/package.json)")
    with file_lock(STACK_DIR / ".npm.lock"):
        if not RESTATE_BIN.exists():
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=STACK_DIR,
                check=True,
                env={**os.environ, "SCARF_ANALYTICS": "false"},
            )
    if not RESTATE_BIN.exists():
        raise RuntimeError(f"npm ci finished but {RESTATE_BIN} is missing (not linux-x64?)")
    return RESTATE_BIN


OIDC_PROVIDER = STACK_DIR / "node_modules/oidc-provider/package.json"


def ensure_oidc_provider() -> Path:
    """npm's ``oidc-provider`` pinned in package.json (the OAUTHBEARER tests' OpenID provider),
    installed with ``npm ci`` if missing (also where the Restate server already is)."""
    if OIDC_PROVIDER.exists():
        return OIDC_PROVIDER.parent
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to install oidc-provider (tests/stack/package.json)")
    with file_lock(STACK_DIR / ".npm.lock"):
        if not OIDC_PROVIDER.exists():
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=STACK_DIR,
                check=True,
                env={**os.environ, "SCARF_ANALYTICS": "false"},
            )
    return OIDC_PROVIDER.parent


def main() -> None:
    """``python -m tests.stack.install``: fetch everything up front (``make stack``)."""
    import time

    from . import apache_kafka, helm, registry

    started = time.monotonic()
    print(f"restate-server: {ensure_restate_server()}")
    print(f"oidc-provider: {ensure_oidc_provider()}")
    reason = apache_kafka.unavailable_reason()
    if reason is None:
        print(f"apache-kafka {apache_kafka.KAFKA_VERSION}: {apache_kafka.ensure_kafka_libs()}")
    elif os.environ.get("CI") == "true":
        raise SystemExit(f"Apache Kafka is mandatory in CI: {reason}")
    else:
        print(f"apache-kafka: skipped, {reason}")
    reason = registry.unavailable_reason()
    if reason is None:
        print(f"apicurio-registry {registry.APICURIO_VERSION}: {registry.ensure_registry()}")
    elif os.environ.get("CI") == "true":
        raise SystemExit(f"Apicurio Registry is mandatory in CI: {reason}")
    else:
        print(f"apicurio-registry: skipped, {reason}")
    reason = helm.unavailable_reason()
    try:
        if reason is None:
            print(f"helm {helm.HELM_VERSION}: {helm.ensure_helm()}")
    except RuntimeError as exc:
        reason = str(exc)
    if reason is not None:
        if os.environ.get("CI") == "true":
            raise SystemExit(f"Helm is mandatory in CI: {reason}")
        print(f"helm: skipped, {reason}")
    print(f"stack installed in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
