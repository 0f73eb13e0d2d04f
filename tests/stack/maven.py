"""Fetching from Maven Central into a cache folder, once: a lock, a temp folder, a marker, a rename.

Used for Apache Kafka's jars (``dependency:copy-dependencies``) and Apicurio Registry's
distribution (``dependency:unpack``): a run that dies half-way leaves no half-filled folder behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .install import file_lock


def maven_fetch(
    pom: Path,
    goal: str,
    output_property: str,
    dest: Path,
    *,
    marker_text: str,
    java_home: str | None,
    complete: Callable[[Path], str | None],
) -> Path:
    """Fill ``dest`` by running ``mvn GOAL -DOUTPUT_PROPERTY=<temp>`` on ``pom`` unless its
    ``.complete`` marker is there. ``complete(folder)`` says what is missing from a finished
    run, or ``None``."""
    marker = dest / ".complete"
    if marker.exists():
        return dest
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"mvn is needed to fetch what {pom} names")
    env = {**os.environ, **({"JAVA_HOME": java_home} if java_home else {})}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if marker.exists():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}.", dir=dest.parent))
        try:
            argv = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom), goal]
            ran = subprocess.run(
                [*argv, f"-D{output_property}={tmp}"], capture_output=True, text=True, env=env
            )
            if ran.returncode != 0:
                raise RuntimeError(
                    f"mvn {goal} failed ({ran.returncode}) for {pom}:\n{ran.stdout}{ran.stderr}"
                )
            missing = complete(tmp)
            if missing is not None:
                raise RuntimeError(f"mvn {goal} for {pom}: {missing} in {tmp}")
            (tmp / ".complete").write_text(marker_text)
            if dest.exists():  # a half-filled folder from before markers: replace it
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
