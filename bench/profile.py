"""Sampling a running bridge with py-spy, and the table of where its CPU goes.

    .venv/bin/python -m bench.profile FILE.raw [--top 25]

:class:`PySpy` attaches ``py-spy record --format raw`` to a process (``bench.bridge --py-spy``);
:func:`summary` reads the collapsed stacks it writes (``frame;frame;... count``, one line per
distinct stack, only samples where a thread was on the CPU) and gives, per function, the share of
samples in which it is on the stack (inclusive) and at its top (self): a share of the bridge's CPU
time, since py-spy without ``--idle`` drops samples of idle threads.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


class PySpy:
    """``py-spy record`` attached to ``pid`` until :meth:`stop` (SIGINT makes it write the file)."""

    def __init__(self, pid: int, out: Path, rate: int = 500) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
             "--rate", str(rate), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _name(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``module.py:func`` (the package kept for bridge/)."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    path = m["file"]
    parts = path.split("/")
    ours = parts[-2:-1] in (["bridge"], ["ingress"])
    short = "/".join(parts[-2:]) if ours else parts[-1]
    return f"{short}:{m['func']}"


def summary(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """(total samples, inclusive samples per function, self samples per function)."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        for name in set(frames):
            inclusive[name] += n
        own[frames[-1]] += n
    return total, inclusive, own


AREAS = (
    ("/bridge/ingress/", "ingress client, own code"),
    ("/bridge/routing.py", "routing, templates, record fields"),
    ("/bridge/template.py", "routing, templates, record fields"),
    ("/bridge/record.py", "routing, templates, record fields"),
    ("/bridge/dispatch.py", "dispatcher, own code"),
    ("/bridge/worker.py", "consume loop, offsets"),
    ("/bridge/offsets.py", "consume loop, offsets"),
    ("prometheus_client", "Prometheus metrics"),
    ("/bridge/metrics.py", "Prometheus metrics"),
    ("aiohttp", "aiohttp"),
    ("yarl", "aiohttp"),
    ("multidict", "aiohttp"),
    ("aiokafka", "aiokafka"),
    ("asyncio/", "event loop, sockets"),
    ("selectors.py", "event loop, sockets"),
    ("uvloop", "event loop, sockets"),
)


def areas(raw: Path) -> tuple[int, Counter[str]]:
    """Self samples by area: the innermost frame's file decides (``AREAS``, first match)."""
    total = 0
    found: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not count.isdigit() or not frames:
            continue
        m = _FRAME.match(frames[-1].strip())
        path = f"/{m['file']}" if m else frames[-1]
        area = next((name for part, name in AREAS if part in path), "other")
        found[area] += int(count)
        total += int(count)
    return total, found


def print_summary(raw: Path, top: int = 25) -> None:
    total, inclusive, own = summary(raw)
    if not total:
        print(f"{raw}: no samples")
        return
    print(f"{raw}: {total} samples on the CPU")
    print(f"{'inclusive %':>12}  function")
    for name, n in inclusive.most_common(top):
        print(f"{100 * n / total:>11.1f}%  {name}")
    print(f"{'self %':>12}  function")
    for name, n in own.most_common(top):
        print(f"{100 * n / total:>11.1f}%  {name}")
    counted, by_area = areas(raw)
    print(f"{'self %':>12}  area")
    for name, n in by_area.most_common():
        print(f"{100 * n / counted:>11.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print_summary(args.raw, args.top)


if __name__ == "__main__":
    main()
