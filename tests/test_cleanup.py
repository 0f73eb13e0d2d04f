"""Interrupting the suite leaves nothing running.

A pytest of its own runs ``tests/held_stack.py``: session fixtures start tansu, a Restate server,
the handlers and a bridge, list their process groups in a marker file, and wait. This test sends
that pytest a SIGTERM (as CI time limits and IDEs do) and then finds none of those processes: not
in the listed groups, not carrying the inner run's environment, not an orphan naming its temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.held_stack import MARKER
from tests.stack import procs
from tests.stack.procs import Process

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
TOKEN = "RESTATE_BRIDGE_CLEANUP_TOKEN"
"""Set only in the inner run's environment, which every process it starts inherits."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def leftovers(groups: set[int], token: str, inner_dir: Path) -> dict[int, str]:
    """Live processes of the inner run, each with its command line and why it counts."""
    found = {}
    mark = f"{TOKEN}={token}".encode()
    for pid, stat in procs.process_table().items():
        if stat.state == "Z":  # dead, only not yet waited for by its (new) parent
            continue
        cmdline = _read(Path(f"/proc/{pid}/cmdline")).replace(b"\0", b" ").decode(errors="replace")
        why = []
        if pid in groups or stat.pgrp in groups:
            why.append(f"in process group {stat.pgrp}, started by the run")
        if mark in _read(Path(f"/proc/{pid}/environ")).split(b"\0"):
            why.append("inherits the run's environment")
        if stat.ppid == 1 and str(inner_dir) in cmdline:
            why.append("an orphan naming the run's temp dir")
        if why:
            found[pid] = f"{cmdline.strip()} ({'; '.join(why)})"
    return found


def test_sigterm_to_pytest_leaves_no_process(tmp_path: Path) -> None:
    marker = tmp_path / "started.json"
    inner_dir = tmp_path / "inner"
    token = uuid.uuid4().hex
    inner = Process(
        "inner-pytest",
        [sys.executable, "-m", "pytest", "tests/held_stack.py", "-q", "-p", "no:cacheprovider",
         f"--basetemp={inner_dir}"],
        tmp_path / "inner-pytest.log",
        cwd=REPO,
        env={MARKER: str(marker), TOKEN: token},
    )  # fmt: skip
    groups: set[int] = set()
    inner.start()
    try:
        inner.wait_until(marker.exists, 120, "holding the stack")
        started = json.loads(marker.read_text())
        names = {int(pgid): name for pgid, name in started["groups"].items()}
        groups = set(names)
        assert {"tansu", "restate-server", "handlers"} <= set(names.values()), names
        bridge = [pgid for pgid, name in names.items() if name.startswith("bridge")]
        if "bridge_failed" in started:  # this checkout's bridge does not start: the rest still runs
            groups -= set(bridge)
        else:
            assert bridge, names
        assert set(leftovers(groups, token, inner_dir)) >= groups, "the stack is not running"

        began = time.monotonic()
        os.kill(inner.pid, signal.SIGTERM)  # pytest alone, as `kill PID` does
        assert inner.proc is not None
        code = inner.proc.wait(60)
        took = time.monotonic() - began
        left = leftovers(groups | {inner.pid}, token, inner_dir)
        assert not left, "left running after SIGTERM:\n" + "\n".join(
            f"  {pid}: {what}" for pid, what in sorted(left.items())
        )
        assert code == 128 + signal.SIGTERM, f"inner pytest exited {code}:\n{inner.log_tail()}"
        assert took < 30, f"the inner pytest took {took:.1f}s to stop"
    finally:
        for pgid in groups:  # whatever happened, leave nothing behind ourselves
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        inner.kill()
