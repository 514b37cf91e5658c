"""What a Ray sweep's driver does when it is stopped (Ctrl-C, SIGTERM): its jobs run in Ray's worker
processes, not below the driver, so the command cannot signal them itself. It asks Ray to cancel each job's
task (``ray.cancel``: Ray interrupts the task's main thread as Ctrl-C would, so a training run stops at its
next step, writes a checkpoint of where it was and ends KILLED itself), waits for them a while, then lets go
of Ray, which kills (SIGKILL) whatever still runs; each job that did not end itself is ended KILLED from its
journal (its checkpoint of the last epoch stays for the re-run). The launcher then starts the MLflow syncer
of the command's folder, where the jobs registered their runs: MLflow then holds them KILLED, and running
the command again resumes them."""

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


@contextmanager
def kept_job_refs() -> Iterator[list]:
    """The ObjectRefs of the job tasks hydra-ray-launcher submits meanwhile (it keeps them to itself until it
    waits for them), so that a stopped sweep can cancel its tasks."""
    from hydra_plugins.hydra_ray_launcher import _core

    refs: list = []
    submit = _core.launch_job_on_ray

    def submit_and_keep(*args, **kwargs):
        ref = submit(*args, **kwargs)
        refs.append(ref)
        return ref

    _core.launch_job_on_ray = submit_and_keep
    try:
        yield refs
    finally:
        _core.launch_job_on_ray = submit


def cancel_jobs(refs: list, sweep_dir: Path, timeout: float = STOP_SECONDS) -> None:
    """Ask Ray to interrupt each job's task as Ctrl-C interrupts a run (a task not yet started never starts);
    wait, at most ``timeout`` seconds, for the jobs' runs to end themselves."""
    import ray

    for ref in refs:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # (already finished, or Ray is going away: ray.shutdown deals with it)
            pass
    _wait_for_jobs(sweep_dir, timeout)


def end_stopped_jobs(sweep_dir: Path, timeout: float = STOP_SECONDS) -> list[Path]:
    """After the driver let go of Ray: each job of ``sweep_dir`` still going on, once its process is gone,
    ended KILLED; the folders it ended."""
    import ray

    ray.shutdown()  # (the driver disconnects: Ray stops its tasks)
    folders = _wait_for_jobs(sweep_dir, timeout)
    return [f for f in folders if not owner_alive(f) and end_killed(f, REASON)]


def _wait_for_jobs(sweep_dir: Path, timeout: float) -> list[Path]:
    """Wait, at most ``timeout`` seconds, until no job of ``sweep_dir`` has a process (a job whose journal
    appears meanwhile included); the jobs' folders."""
    deadline = time.monotonic() + timeout
    while True:
        folders = [p.parent for p in Path(sweep_dir).rglob(JOURNAL_FILE)]
        if not any(owner_alive(f) for f in folders) or time.monotonic() >= deadline:
            return folders
        time.sleep(0.1)


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
