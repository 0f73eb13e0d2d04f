"""Helm, for the chart tests: built once from the Go module proxy and cached.

``go install helm.sh/helm/v3/cmd/helm@v{HELM_VERSION}`` with GOBIN, GOPATH and GOCACHE under
``${XDG_CACHE_HOME:-~/.cache}/restate-kafka-bridge/helm-{HELM_VERSION}/``; a ``.complete`` marker
next to the binary says the build finished, a lock serialises concurrent builds (tests, ``make
test``). Needs Go (on PATH or /usr/local/go/bin); without it ``unavailable_reason()`` says why the
chart tests are skipped (and, with ``CI=true``, why they fail).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .install import file_lock

HELM_VERSION = "3.22.0"
HELM_MODULE = f"helm.sh/helm/v3/cmd/helm@v{HELM_VERSION}"
# what helm's own Makefile stamps in: a plain `go install` reports "v3.22"
LDFLAGS = f"-X helm.sh/helm/v3/internal/version.version=v{HELM_VERSION}"
GO_FALLBACK = Path("/usr/local/go/bin/go")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "restate-kafka-bridge" / f"helm-{HELM_VERSION}"


def helm_path() -> Path:
    return cache_root() / "bin" / "helm"


def _marker() -> Path:
    return cache_root() / "bin" / ".complete"


def find_go() -> str | None:
    on_path = shutil.which("go")
    if on_path is not None:
        return on_path
    return str(GO_FALLBACK) if GO_FALLBACK.exists() else None


def unavailable_reason() -> str | None:
    """None if Helm is built or can be built here, else one sentence saying why not."""
    if _marker().exists() and helm_path().exists():
        return None
    if find_go() is None:
        return (
            f"Helm {HELM_VERSION} is not built and cannot be: no `go` on PATH or at "
            f"{GO_FALLBACK} to run `go install {HELM_MODULE}`."
        )
    return None


def ensure_helm() -> Path:
    """The helm binary, built with ``go install`` on first use (a few minutes on 2 cores)."""
    binary, marker = helm_path(), _marker()
    if marker.exists() and binary.exists():
        return binary
    go = find_go()
    if go is None:
        raise RuntimeError(unavailable_reason() or "no go")
    root = cache_root()
    with file_lock(root / ".build.lock"):
        if marker.exists() and binary.exists():
            return binary
        env = {
            **os.environ,
            "GOBIN": str(root / "bin"),
            "GOPATH": str(root / "gopath"),
            "GOCACHE": str(root / "gocache"),
            "GOFLAGS": "-modcacherw -buildvcs=false",
            "CGO_ENABLED": "0",
        }
        started = time.monotonic()
        built = subprocess.run(
            [go, "install", f"-ldflags={LDFLAGS}", HELM_MODULE],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
        )
        if built.returncode != 0 or not binary.exists():
            raise RuntimeError(
                f"`go install {HELM_MODULE}` failed ({built.returncode}):\n"
                f"{built.stdout}{built.stderr}"
            )
        version = subprocess.run(
            [str(binary), "version", "--short"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if not version.startswith(f"v{HELM_VERSION}"):
            raise RuntimeError(f"{binary} reports {version!r}, not v{HELM_VERSION}")
        marker.write_text(f"{HELM_VERSION} built in {time.monotonic() - started:.0f}s\n")
        # the module and build caches are only needed to build: keep the binary, free the disk
        shutil.rmtree(root / "gocache", ignore_errors=True)
        shutil.rmtree(root / "gopath", ignore_errors=True)
    return binary


if __name__ == "__main__":
    started = time.monotonic()
    print(f"helm {HELM_VERSION}: {ensure_helm()} ({time.monotonic() - started:.1f}s)")
