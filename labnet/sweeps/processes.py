"""The worker processes a command started (joblib's loky workers), stopped when the command is."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

GRACE_SECONDS = 10.0  # an interrupted worker writes its checkpoint and journal end within this


def children(pid: int) -> list[int]:
    """Processes below ``pid`` in this session (a syncer, in a session of its own, is not one of them), but
    not loky's or multiprocessing's resource trackers: they ignore SIGINT (stopping them cost the whole grace
    time) and end by themselves with this process, after cleaning up what the workers left."""
    session, found, frontier = os.getsid(0), [], [pid]
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        child, ppid, sid = int(entry.name), int(fields[1]), int(fields[3])
        if sid == session and b"resource_tracker" not in command:
            parents.setdefault(ppid, []).append(child)
    while frontier:
        below = parents.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def stop_children() -> int:
    """SIGINT every worker below this process (each checkpoints and ends its run KILLED), wait for them,
    then SIGKILL what is left (its journal is then ended KILLED by the next sync). The number stopped."""
    return stop_processes(children(os.getpid()))


def stop_processes(pids: list[int]) -> int:
    """``stop_children`` for the processes ``pids`` (this process's children)."""
    for pid in pids:
        _signal(pid, signal.SIGINT)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    for pid in pids:  # (our own children: reap them)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
