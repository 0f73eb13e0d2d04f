"""Child processes for the test stack: free ports, logs in files, readiness polling, clean stops.

Every :class:`Process` leads its own process group and is in a registry of live groups from start
to stop. :func:`install_reaper` (pytest's ``pytest_configure`` in ``tests/conftest.py``; a script
gets it from its first ``Process.start()``) makes a SIGTERM or SIGHUP kill every registered group
and every descendant of this process before the run ends, so an interrupted suite or benchmark
leaves nothing running.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import NamedTuple


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class StackError(RuntimeError):
    """A stack process failed to start; the message names its log file."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread once a SIGTERM (or SIGHUP) has killed every child: pytest takes it
    as an interrupt, so it unwinds, runs the teardowns that are left and reports."""


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` the reaper needs."""

    ppid: int
    pgrp: int
    state: str
    """``Z`` for a zombie: dead, only waiting for its parent to read its status."""
    starttime: int
    """Clock ticks after boot: with the pid, names one process even if the pid is reused."""


def proc_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name in parentheses may hold spaces
    return ProcStat(int(fields[1]), int(fields[2]), fields[0], int(fields[19]))


def process_table() -> dict[int, ProcStat]:
    """Every process this user can see, live or zombie, by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            table[int(entry)] = stat
    return table


_lock = threading.RLock()  # re-entrant: the signal handler may run while the main thread holds it
_groups: dict[int, tuple[str, int | None]] = {}
"""The live process groups we lead: pgid -> (name, the leader's start time)."""
_reaper: dict[str, bool] = {"installed": False, "interrupt": False}
_terminated_by: list[int] = []
"""The signal that stopped the run, once one has."""


def track(pgid: int, name: str) -> None:
    """Register a process group we started (its leader's pid), to be killed on SIGTERM."""
    stat = proc_stat(pgid)
    with _lock:
        _groups[pgid] = (name, stat.starttime if stat else None)


def release(pgid: int) -> None:
    """After the leader ``pgid`` has exited and been waited for: SIGKILL what is left of its group
    (helpers it forked), and forget it."""
    with _lock:
        _, started = _groups.pop(pgid, ("", None))
    leader = proc_stat(pgid)
    if leader is not None and leader.starttime != started:
        return  # the pid is a stranger's now (ours was waited for long ago)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def tracked() -> dict[int, str]:
    """The registered process groups: pgid -> name."""
    with _lock:
        return {pgid: name for pgid, (name, _) in _groups.items()}


def terminated_by() -> int | None:
    """The signal (SIGTERM or SIGHUP) that stopped this run, or None."""
    return _terminated_by[0] if _terminated_by else None


def _targets(table: dict[int, ProcStat]) -> tuple[set[int], set[int]]:
    """(process groups, single pids) to kill: the registered groups, and every descendant of this
    process (a group it leads, or only itself when it shares a group, e.g. ``subprocess.run``)."""
    me, own_group = os.getpid(), os.getpgrp()
    with _lock:
        registered = dict(_groups)
    groups = set()
    for pgid, (_, started) in registered.items():
        leader = table.get(pgid)
        if leader is None or started is None or leader.starttime == started:
            groups.add(pgid)  # else the pid was reused by a stranger: not ours
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    pids = set()
    todo = list(children.get(me, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        pgrp = table[pid].pgrp
        if pgrp == pid and pgrp != own_group:
            groups.add(pid)
        elif pgrp not in groups:
            pids.add(pid)
    groups.discard(own_group)
    pids.discard(me)
    return groups, pids


def _alive(
    table: dict[int, ProcStat], groups: set[int], pids: set[int]
) -> tuple[set[int], set[int]]:
    members = {stat.pgrp for stat in table.values() if stat.state != "Z"}
    return (
        groups & members,
        {pid for pid in pids if pid in table and table[pid].state != "Z"},
    )


def _send(groups: set[int], pids: set[int], sig: int) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap(grace: float = 3.0) -> None:
    """Kill every registered process group and every descendant of this process: SIGTERM, then
    SIGKILL to whatever still runs after ``grace`` seconds. Returns when all are gone (or 5 s after
    the SIGKILL)."""
    groups: set[int] = set()
    pids: set[int] = set()
    deadline = time.monotonic() + grace
    killed = False
    while True:
        table = process_table()
        new_groups, new_pids = _targets(table)  # again each round: children forked meanwhile
        _send(new_groups - groups, new_pids - pids, signal.SIGKILL if killed else signal.SIGTERM)
        groups |= new_groups
        pids |= new_pids
        live_groups, live_pids = _alive(table, groups, pids)
        if not live_groups and not live_pids:
            break
        if not killed and time.monotonic() > deadline:
            _send(live_groups, live_pids, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 5
        elif killed and time.monotonic() > deadline:
            break
        time.sleep(0.05)
    with _lock:
        _groups.clear()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    first = not _terminated_by
    if first:
        _terminated_by.append(signum)
    reap()
    if first and _reaper["interrupt"]:
        raise Terminated(f"{signal.Signals(signum).name}: every process of the run is stopped")
    # a script, or a second signal: die of it, as without a handler
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_reaper(*, interrupt: bool = False) -> None:
    """On SIGTERM or SIGHUP, :func:`reap` everything, then raise :class:`Terminated` in the main
    thread if ``interrupt`` (pytest: it unwinds and reports), else die of the signal (a script);
    a second signal always dies of it. At exit, :func:`reap` what is left.

    Once per process, from the main thread; a signal someone else handles (asyncio's, nohup's
    SIG_IGN) is left alone.
    """
    if _reaper["installed"] or threading.current_thread() is not threading.main_thread():
        return
    _reaper.update(installed=True, interrupt=interrupt)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_signal)
    atexit.register(reap)


class Process:
    """One child process whose stdout and stderr go to ``log_path``.

    The child runs in its own process group so that ``kill()`` reaches helpers it spawns, and the
    group is registered (:func:`track`) until it is stopped, so that a SIGTERM to this process kills
    it too (:func:`install_reaper`).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if _terminated_by:
            raise Terminated(f"not starting {self.name}: the run is being stopped")
        install_reaper()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,
            )
            track(self.proc.pid, self.name)
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it is true; fail with the log's tail if the process dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(
                    f"{self.name} exited with {self.proc and self.proc.returncode} before {what}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if ready():
                    return
            except Exception:  # readiness probes fail in many ways until the process is up
                pass
            time.sleep(0.05)
        raise StackError(
            f"{self.name} not {what} after {timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
        )

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``. Safe to call twice."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        release(self.pid)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        if self.proc is not None:
            release(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
