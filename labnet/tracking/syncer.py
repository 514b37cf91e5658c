"""The background syncer: one process per working folder that mirrors its runs' journals to MLflow.

A tracked run leaves a marker in ``<working folder>/.labnet/pending/`` and makes sure a syncer runs
there. The syncer imports MLflow once (seconds of CPU, on another core than the training), follows
every marked journal epoch by epoch, and removes a marker once its run has ended and everything is in
MLflow. It runs in a session of its own, so the command that trained returns without waiting for
MLflow, and Ctrl-C on that command does not stop the mirroring of what it recorded. A marker whose
run can't be synced (the store is down) stays, and the next labnet command in that folder, or
``labnet sync``, tries again; a run whose process died is ended KILLED from its journal.

``python -m labnet.tracking.syncer FOLDER`` is the process; :func:`ensure_syncer` starts it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from labnet.record.files import atomic_write_text
from labnet.record.journal import owner_alive
from labnet.record.result import SYNC_STATE_FILE
from labnet.tracking.mirror import record_sync_error

STATE_DIR = ".labnet"
POLL_SECONDS = 0.25
LINGER_SECONDS = 3.0  # an idle syncer waits this long for the next run (the next job of a sweep)
GIVE_UP_SECONDS = 60.0  # a dead run whose store keeps failing is left for the next command / labnet sync


def pending_dir(workdir: Path) -> Path:
    return Path(workdir) / STATE_DIR / "pending"


def register(workdir: Path, folder: Path, run_key: str, default_uri: str | None = None) -> Path:
    """Mark ``folder``'s journal as one to mirror (before the syncer is asked to run: it cannot miss it)."""
    marker = pending_dir(workdir) / f"{run_key}-{Path(folder).name}.json"
    atomic_write_text(marker, json.dumps({"folder": str(Path(folder).resolve()), "uri": default_uri}))
    return marker


def pending(workdir: Path) -> list[tuple[Path, Path, str | None]]:
    """(marker, run folder, store URI) of every run waiting to be mirrored from ``workdir``."""
    found = []
    for marker in sorted(pending_dir(workdir).glob("*.json")):
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        found.append((marker, Path(data["folder"]), data.get("uri")))
    return found


def _lock_path(workdir: Path) -> Path:
    return Path(workdir) / STATE_DIR / "syncer.lock"


def _try_lock(workdir: Path) -> int | None:
    path = _lock_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def syncer_running(workdir: Path) -> bool:
    fd = _try_lock(workdir)
    if fd is None:
        return True
    os.close(fd)
    return False


def ensure_syncer(workdir: Path) -> None:
    """Start the background syncer of ``workdir`` unless one runs (it picks up new markers by itself)."""
    workdir = Path(workdir).resolve()
    if syncer_running(workdir):
        return
    root = str(Path(__file__).resolve().parents[2])  # the labnet this process runs, installed or not
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "OPENBLAS_NUM_THREADS": "1",  # it draws pictures and copies files; the cores are the training's
        "OMP_NUM_THREADS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # a server that is down fails a sync in seconds (the syncer tries again itself), not after MLflow's
        # minutes of retries
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
    }
    log = open(Path(workdir) / STATE_DIR / "syncer.log", "ab")  # noqa: SIM115 (handed to the child)
    with log:
        subprocess.Popen(
            [sys.executable, "-m", "labnet.tracking.syncer", str(workdir)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C and SIGTERM aimed at the command do not stop the mirroring
            close_fds=True,
        )


def wait_for(workdir: Path, folders: list[Path], timeout: float) -> bool:
    """Wait until the runs in ``folders`` are mirrored (their markers gone); False after ``timeout`` s, or as
    soon as the syncer failed on one of them after it ended (the store is down, locked, broken)."""
    wanted = {Path(f).resolve() for f in folders}
    since = time.time()
    deadline = time.monotonic() + timeout
    while True:
        left = [f for _, f, _ in pending(workdir) if f.resolve() in wanted]
        if not left:
            return True
        if time.monotonic() > deadline or any(_failed_since(f, since) for f in left):
            return False
        if not syncer_running(workdir):
            ensure_syncer(workdir)
        time.sleep(0.1)


def _failed_since(folder: Path, since: float) -> bool:
    try:
        state = json.loads((folder / SYNC_STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return bool(state.get("error")) and state.get("error_time", 0) >= since


class Syncer:
    """The loop of the background process."""

    def __init__(self, workdir: Path) -> None:
        from labnet.tracking.mirror import Mirror

        self.workdir = Path(workdir)
        self.mirror = Mirror()
        self.failing_since: dict[Path, float] = {}
        self.retry_at: dict[Path, float] = {}

    def pass_once(self) -> int:
        """Sync every marked folder once; the number of runs still to follow."""
        left = 0
        now = time.monotonic()
        for marker, folder, uri in pending(self.workdir):
            if not folder.is_dir():
                marker.unlink(missing_ok=True)
                continue
            if _failing(self, folder, now):
                continue  # given up: left for the next command in this folder, or `labnet sync`
            if self.retry_at.get(folder, 0) > now:
                left += 1
                continue
            try:
                outcome = self.mirror.sync(folder, uri)
            except Exception as err:  # the store is down, locked, full: keep the marker, try again later
                first = self.failing_since.setdefault(folder, now)
                self.retry_at[folder] = now + min(30.0, 1.0 + 2 * (now - first))
                print(f"labnet sync: {folder}: {type(err).__name__}: {err}", flush=True)
                with contextlib.suppress(Exception):
                    record_sync_error(folder, err)
                if not _failing(self, folder, now):
                    left += 1
                continue
            self.failing_since.pop(folder, None)
            if outcome.complete:
                marker.unlink(missing_ok=True)
            else:
                left += 1
        return left

    def run(self) -> None:
        idle_since = None
        while True:
            if self.pass_once():
                idle_since = None
            else:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > LINGER_SECONDS:
                    return
            time.sleep(POLL_SECONDS)


def main(workdir: str) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lock = _try_lock(Path(workdir))
    if lock is None:
        return  # another syncer follows this folder
    try:
        import mlflow  # noqa: F401  (the slow import, once)

        syncer = Syncer(Path(workdir))
        while True:
            syncer.run()
            # between giving up the lock and exiting, a run may have registered and seen the lock held:
            # look once more, and carry on if one did (unless a new syncer took over)
            os.close(lock)
            if all(_failing(syncer, f, time.monotonic()) for _, f, _ in pending(Path(workdir))):
                return
            lock = _try_lock(Path(workdir))
            if lock is None:
                return
    except Exception:
        traceback.print_exc()
    finally:
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        os._exit(0)  # without the seconds Python takes to tear MLflow down


def _failing(syncer: Syncer, folder: Path, now: float) -> bool:
    """Given up on: its store has failed for GIVE_UP_SECONDS and its run's process is gone (no more epochs
    will come)."""
    since = syncer.failing_since.get(folder)
    return since is not None and now - since > GIVE_UP_SECONDS and not owner_alive(folder)


if __name__ == "__main__":
    main(sys.argv[1])
