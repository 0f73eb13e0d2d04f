"""`make demo` end to end: it runs, prints progress and a summary, and leaves nothing running.

The demo runs on tansu by design (the embedded default that needs only PyPI), so this test does not
take the ``broker`` fixture.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def children_of(pid: int) -> set[int]:
    """Every live process whose parent chain includes ``pid``'s session (by session id)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:  # ppid
            found.add(int(entry.name))
    return found


def test_demo_runs_and_stops_everything(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.demo", "--seconds", "6", "--rate", "100", "--exit"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    spawned: set[int] = set()
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            spawned |= children_of(proc.pid)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "Bridge status page: http://127.0.0.1:" in out
    assert "produced" in out
    assert "accepted" in out
    assert "route orders" in out
    assert "route payments" in out
    assert "Where to look next:" in out
    assert out.rstrip().endswith("Stopped; nothing is left running.")
    assert "joining the Kafka consumer group..." in out  # not "accepted 0" while it joins
    assert "python -m examples.client" in out
    assert len(spawned) >= 4, f"expected broker, Restate, handlers and bridge, saw {spawned}"
    alive = [pid for pid in spawned if Path(f"/proc/{pid}").exists()]
    assert not alive, f"left running: {alive}"
    assert list(tmp_path.iterdir()) == [], "the demo left files in its TMPDIR"


def test_without_a_terminal_the_demo_runs_until_sigterm(tmp_path: Path) -> None:
    """Under nohup, an IDE or ``make demo > log &`` stdin is no terminal: it keeps running
    after the summary all the same, until SIGTERM, then stops everything and cleans up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.demo", "--seconds", "3", "--rate", "50"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    spawned: set[int] = set()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            spawned |= children_of(proc.pid)
            if "keeps running" in line:
                break
        time.sleep(2)
        assert proc.poll() is None, "".join(lines)  # still running with no terminal
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert out.rstrip().endswith("Stopped; nothing is left running.")
    alive = [pid for pid in spawned if Path(f"/proc/{pid}").exists()]
    assert not alive, f"left running: {alive}"
    assert list(tmp_path.iterdir()) == [], "the demo left files in its TMPDIR"
