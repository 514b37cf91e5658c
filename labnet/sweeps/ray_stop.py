"""What a Ray sweep's driver does when it is stopped (Ctrl-C, SIGTERM): its jobs run in Ray's worker
processes, not below the driver, so the command cannot stop them itself; Ray kills them (SIGKILL) once their
driver disconnects. The driver waits for that and ends each unfinished job KILLED from its journal (its
checkpoint of the last epoch stays for the re-run); the launcher then starts the MLflow syncer of the
command's folder, where the jobs registered their runs: MLflow then holds them KILLED, and running the
command again resumes them."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labnet.record.journal import JOURNAL_FILE, owner_alive
from labnet.sweeps.jobs import end_killed

STOP_SECONDS = 15.0  # Ray kills a disconnected driver's workers within a few seconds
REASON = "stopped with its sweep (Ctrl-C or SIGTERM to the command): Ray killed its task"


def end_stopped_jobs(sweep_dir: Path, timeout: float = STOP_SECONDS) -> list[Path]:
    """After the driver let go of Ray: each job of ``sweep_dir`` still going on, once its process is gone,
    ended KILLED; the folders it ended."""
    import ray

    ray.shutdown()  # (the driver disconnects: Ray stops its tasks)
    folders = [p.parent for p in Path(sweep_dir).rglob(JOURNAL_FILE)]
    deadline = time.monotonic() + timeout
    while any(owner_alive(f) for f in folders) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f for f in folders if not owner_alive(f) and end_killed(f, REASON)]


@contextmanager
def labnet_sigterm() -> Iterator[None]:
    """Keep labnet's SIGTERM handler (stop the sweep like Ctrl-C) over the one ``ray.init`` installs, which
    ends the driver at once, leaving its jobs to be killed without their record."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(handler):
            try:
                signal.signal(signal.SIGTERM, handler)
            except ValueError:  # (not the main thread: nothing of ours to keep)
                pass
