"""The journal: an append-only file in a run's folder of what happened to the run, in order.

One JSON object per line, flushed as written (at least once per epoch):

    {"type": "start", "time": ..., "run_key": ..., "name": ..., "params": {...}, "tags": {...}, ...}
    {"type": "mlflow", "uri": ..., "experiment": ..., ...}          (written by the MLflow tracker)
    {"type": "epoch", "time": ..., "epoch": 3, "step": 24, "metrics": {...}, "steps": [[step, loss, ms], ...]}
    {"type": "artifact", "path": "weights.npz", "dest": null}
    {"type": "final", "time": ..., "epoch": 3, "metrics": {...}}
    {"type": "end", "time": ..., "status": "FINISHED", "error": null}

A resumed run appends a new ``start`` (a segment) with the same ``run_key``, in the same folder or in a
new one that names the old folder in ``resume_of``. The process writing a journal holds an exclusive
``flock`` on it for as long as it lives, so anyone can tell a live run from one whose process died
(the kernel drops the lock, also on SIGKILL): such a run is ended KILLED by whoever syncs it next.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labnet.record.files import RecordError, disk_error, stamp

JOURNAL_FILE = "journal.jsonl"
STATUSES = ("FINISHED", "FAILED", "KILLED")


class Journal:
    """The writing end of a run's journal, held by the process that trains the run."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / JOURNAL_FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise disk_error(self.path, err) from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RecordError(
                f"{self.path.parent} belongs to a run that is still going on (its journal is locked); "
                "give this run a folder of its own (leave hydra.run.dir at its default)"
            ) from None
        if os.fstat(self._fd).st_size and not self.path.read_bytes().endswith(b"\n"):
            self._write(b"\n")  # a line cut short by a crash stays alone, unreadable, and is skipped

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as err:
            raise disk_error(self.path, err) from err

    def append(self, kind: str, **fields: Any) -> None:
        fields.setdefault("time", stamp())
        self._write((json.dumps({"type": kind, **fields}, default=_plain) + "\n").encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # (releases the lock)
            self._fd = -1


def _plain(value: Any) -> Any:
    """NumPy scalars and paths as JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_records(folder: Path) -> list[dict[str, Any]]:
    """The journal's records; a line cut short (a crash, a full disk) is skipped."""
    path = Path(folder) / JOURNAL_FILE
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def owner_alive(folder: Path) -> bool:
    """Whether a process still holds the journal in ``folder`` (its run goes on)."""
    path = Path(folder) / JOURNAL_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def end_abandoned(folder: Path, reason: str | None = None) -> bool:
    """Append a KILLED end to a journal whose process died before ending its run; True if it did.
    ``reason``: how it died, when the caller knows (a sweep's worker killed by a signal)."""
    path = Path(folder) / JOURNAL_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # alive after all
        state = JournalState.of(read_records(folder))
        if not state.segments or state.ended:
            return False
        if not path.read_bytes().endswith(b"\n"):
            os.write(fd, b"\n")
        last = state.last_time or stamp()
        unknown = f"the labnet process (pid {state.start.get('pid')}) ended without ending its run (killed?)"
        record = {
            "type": "end",
            "time": last,
            "status": "KILLED",
            "error": reason or unknown,
            "by": "sync",
        }
        os.write(fd, (json.dumps(record) + "\n").encode())
        return True
    finally:
        os.close(fd)


@dataclass
class JournalState:
    """What a journal says, segment by segment."""

    segments: list[list[dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> JournalState:
        state = cls()
        for record in records:
            if record.get("type") == "start":
                state.segments.append([])
            if state.segments:
                state.segments[-1].append(record)
        return state

    @property
    def start(self) -> dict[str, Any]:
        return self.segments[0][0] if self.segments else {}

    @property
    def end(self) -> dict[str, Any] | None:
        """The end of the last segment, if it ended."""
        if not self.segments:
            return None
        return next((r for r in reversed(self.segments[-1]) if r.get("type") == "end"), None)

    @property
    def ended(self) -> bool:
        return self.end is not None

    @property
    def last_time(self) -> float | None:
        return max((r["time"] for seg in self.segments for r in seg if "time" in r), default=None)

    def epochs(self) -> dict[int, dict[str, Any]]:
        """Epoch records by epoch number (a resumed segment never writes an epoch twice)."""
        return {r["epoch"]: r for seg in self.segments for r in seg if r.get("type") == "epoch"}


def read_state(folder: Path) -> JournalState:
    return JournalState.of(read_records(folder))


def chain(folder: Path) -> list[Path]:
    """The folders a run's segments were written in, oldest first (a sweep job resumed in a new folder)."""
    folders: list[Path] = []
    current: Path | None = Path(folder)
    while current is not None and current not in folders:
        folders.insert(0, current)
        origin = read_state(current).start.get("resume_of")
        current = Path(origin) if origin else None
    return folders


def epoch_history(folder: Path, until_epoch: int | None = None) -> list[dict[str, Any]]:
    """The run's per-epoch metrics as journaled, across its folders, up to ``until_epoch``."""
    epochs: dict[int, dict[str, Any]] = {}
    for each in chain(folder):
        epochs.update(read_state(each).epochs())
    return [dict(epochs[e]["metrics"]) for e in sorted(epochs) if until_epoch is None or e <= until_epoch]


def last_epoch(folder: Path) -> int:
    """The last epoch the run's journals hold (0 before the first)."""
    epochs = [e for each in chain(folder) for e in read_state(each).epochs()]
    return max(epochs, default=0)
