"""MLflow as a mirror of run folders: brings a run's MLflow run up to date with its journal.

Every step is idempotent, so a folder can be synced any number of times, by the background syncer
during the run, after it, or later by ``labnet sync``, and MLflow ends up with one run per labnet run:

- the MLflow run is found by the journal's ``run_key`` (tag ``labnet.run_key``), created only if absent,
  with the journal's start time;
- metrics carry the journal's steps and wall-clock times, and MLflow's SQL store ignores a point it
  already holds with the same key, value, step and time;
- artifacts are files copied to the same place again; the status and end time are the journal's.

The records already mirrored are counted in the folder's ``.sync.json``, so a sync only sends what is new.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labnet.errors import TrackingError
from labnet.params import param_entries
from labnet.record.files import atomic_write_text
from labnet.record.journal import JOURNAL_FILE, end_abandoned, owner_alive, read_records, read_state
from labnet.record.result import SYNC_STATE_FILE
from labnet.store_uri import absolute_store_uri, sqlite_path
from labnet.tracking.metric_names import STEP_LOSS, mlflow_metric_name
from labnet.tracking.store import create_whole, store_lock

MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_TAG_LENGTH = 5000
SYNC_LOCK_FILE = ".sync.lock"


def ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def git_commit(cwd: str | None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def find_or_create_experiment(client, name: str, dataset: str | None = None) -> str:
    """The experiment called ``name``, created if it does not exist (by a parallel process, maybe), with a
    description of ``dataset`` and of labnet."""
    from labnet.tracking.experiment_note import NOTE_TAG, experiment_note

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, tags={NOTE_TAG: experiment_note(dataset)})
    except Exception:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@dataclass
class SyncOutcome:
    folder: Path
    run_id: str | None
    status: str  # the journal's status (RUNNING while its process lives)
    complete: bool  # everything the journal holds is in MLflow, and the run ended


def metric_points(record: dict[str, Any]):
    """The MLflow metrics of one ``epoch`` or ``final`` journal record."""
    from mlflow.entities import Metric

    stamp, step = ms(record["time"]), int(record["epoch"])
    points = [
        Metric(mlflow_metric_name(key), float(value), stamp, step)
        for key, value in record["metrics"].items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    points += [Metric(STEP_LOSS, float(loss), int(when), int(s)) for s, loss, when in record.get("steps", [])]
    return points


class Mirror:
    """Syncs run folders to their MLflow stores (one client per store, opened once)."""

    def __init__(self) -> None:
        self.clients: dict[str, Any] = {}

    def client(self, uri: str):
        """The client of ``uri``; a new SQLite store is created whole under a file lock, so runs started
        together never race through MLflow's schema creation, and a process killed meanwhile leaves none."""
        if uri not in self.clients:
            from mlflow.tracking import MlflowClient

            with store_lock(uri):
                create_whole(uri)
                client = MlflowClient(uri)
                client.search_experiments(max_results=1)  # (creates or migrates the store now, under the lock)
            self.clients[uri] = client
        return self.clients[uri]

    # -- one folder ------------------------------------------------------------------------------
    def sync(self, folder: Path, default_uri: str | None = None) -> SyncOutcome:
        folder = Path(folder).resolve()
        with _folder_lock(folder):
            return self._sync(folder, default_uri)

    def _sync(self, folder: Path, default_uri: str | None) -> SyncOutcome:
        state = read_state(folder)
        if state.segments and not state.ended and not owner_alive(folder):
            end_abandoned(folder)  # its process died (SIGKILL, power, OOM): the run ends KILLED
        records = read_records(folder)
        if not records:
            return SyncOutcome(folder, None, "EMPTY", True)
        tracking = next((r for r in records if r.get("type") == "mlflow"), {})
        uri = resolve_uri(tracking, default_uri)
        sync_state = _read_sync_state(folder)
        if sync_state.get("uri") != uri:
            sync_state = {"uri": uri, "done": 0}
        try:
            return self._mirror(folder, uri, records, tracking, sync_state)
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(
                f"the MLflow store {store_name(uri)} could not take the run in {folder}: "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from err

    def _mirror(self, folder, uri, records, tracking, sync_state) -> SyncOutcome:
        client = self.client(uri)
        run_id = sync_state.get("run_id") or self._find_or_create(client, records, tracking)
        sync_state["run_id"] = run_id
        _write_sync_state(folder, sync_state)
        model = None
        pending_metrics: list = []
        status = "RUNNING"
        for index in range(sync_state["done"], len(records)):
            record = records[index]
            kind = record.get("type")
            if kind in ("epoch", "final"):
                pending_metrics += metric_points(record)
                continue
            self._flush(client, run_id, pending_metrics)
            pending_metrics = []
            if kind == "start" and index > 0:
                self._resume(client, run_id, record)
            elif kind == "artifact":
                path = folder / record["path"]
                if path.exists():
                    client.log_artifact(run_id, str(path), record.get("dest"))
            elif kind == "model":
                model = record
            elif kind == "pictures":
                for picture in draw_pictures(folder, records[: index + 1], record):
                    client.log_artifact(run_id, str(picture))
            elif kind == "end":
                # (the model record may have been mirrored by an earlier sync that stopped before the end)
                model = model or next((r for r in reversed(records[:index]) if r.get("type") == "model"), None)
                if model is not None and record["status"] == "FINISHED":  # a FAILED run's weights are no model
                    self._log_model(client, run_id, folder, model)
                self._end(client, run_id, record)
            sync_state["done"] = index + 1
            _write_sync_state(folder, sync_state)
        self._flush(client, run_id, pending_metrics)
        sync_state["done"] = len(records)
        state = read_state(folder)
        if state.ended:
            status = state.end["status"]
        sync_state["complete"] = state.ended and sync_state["done"] == len(read_records(folder))
        sync_state.pop("error", None)
        sync_state.pop("error_time", None)
        _write_sync_state(folder, sync_state)
        return SyncOutcome(folder, run_id, status, sync_state["complete"])

    def _find_or_create(self, client, records: list[dict[str, Any]], tracking: dict[str, Any]) -> str:
        from mlflow.entities import Param

        start = records[0]
        dataset = start["params"].get("dataset.name")
        experiment_id = tracking.get("experiment_id") or find_or_create_experiment(
            client, tracking.get("experiment") or dataset or "Default", dataset
        )
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`labnet.run_key` = '{start['run_key']}'", max_results=1
        )
        if found:
            return found[0].info.run_id
        tags = {**start.get("tags", {}), "labnet.run_key": start["run_key"]}
        if tracking.get("parent_run_id"):
            tags["mlflow.parentRunId"] = tracking["parent_run_id"]
        commit = git_commit(tracking.get("cwd"))
        if commit:
            tags["mlflow.source.git.commit"] = commit
        tags = {k: str(v)[:MAX_TAG_LENGTH] for k, v in tags.items()}
        run = client.create_run(experiment_id, start_time=ms(start["time"]), tags=tags, run_name=start.get("name"))
        run_id = run.info.run_id
        entries, truncated = param_entries(start.get("params_logged", start.get("params", {})))
        params = [Param(k, v) for k, v in entries]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[i : i + MAX_PARAMS_PER_BATCH])
        if truncated:
            client.set_tag(run_id, "labnet.truncated_params", ", ".join(truncated)[:MAX_TAG_LENGTH])
        return run_id

    @staticmethod
    def _flush(client, run_id: str, points: list) -> None:
        for i in range(0, len(points), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=points[i : i + MAX_METRICS_PER_BATCH])

    @staticmethod
    def _resume(client, run_id: str, start: dict[str, Any]) -> None:
        """A later segment (the run resumed): RUNNING again, unless the MLflow run already ended after it."""
        from mlflow.entities import RunTag

        info = client.get_run(run_id).info
        if info.end_time is None or info.end_time <= ms(start["time"]):
            client.update_run(run_id, status="RUNNING")
        tags = {k: v for k, v in start.get("tags", {}).items() if k.startswith("labnet.resume")}
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, str(v)[:MAX_TAG_LENGTH]) for k, v in tags.items()])

    @staticmethod
    def _end(client, run_id: str, end: dict[str, Any]) -> None:
        """The journal's status and end time, unless a later segment (another folder) ended it since."""
        info = client.get_run(run_id).info
        if info.end_time is not None and info.end_time > ms(end["time"]) and info.status != "RUNNING":
            return
        if end.get("error"):
            client.set_tag(run_id, "labnet.error", str(end["error"])[:MAX_TAG_LENGTH])
        client.set_terminated(run_id, status=end["status"], end_time=ms(end["time"]))

    def _log_model(self, client, run_id: str, folder: Path, record: dict[str, Any]) -> None:
        from labnet.errors import LabnetError
        from labnet.record.journal import last_epoch
        from labnet.tracking.logged_model import log_model

        weights, spec = folder / record["weights"], folder / record["spec"]
        if weights.is_file() and spec.is_file():
            try:
                log_model(client, run_id, folder, weights, spec, step=last_epoch(folder))
            except LabnetError as err:  # e.g. a layer registered only in the notebook session that trained it
                reason = f"the model could not be rebuilt here, so it is not logged: {err}"
                client.set_tag(run_id, "labnet.model_not_logged", reason[:MAX_TAG_LENGTH])


def store_name(uri: str) -> str:
    """A store as a user knows it: the database file of a SQLite store, else its URI."""
    path = sqlite_path(uri)
    return str(path) if path is not None else uri


def resolve_uri(tracking: dict[str, Any], default_uri: str | None = None) -> str:
    """The store a journal goes to: its ``tracking.uri``, else ``default_uri``, else MLflow's default as seen
    from the folder the run was started in (``sqlite:///mlflow.db`` there, where ``mlflow ui`` finds it)."""
    if tracking.get("uri"):
        return tracking["uri"]
    if default_uri:
        return default_uri
    import mlflow

    cwd = tracking.get("cwd") or os.getcwd()
    with _chdir(cwd):
        return absolute_store_uri(mlflow.get_tracking_uri())


def draw_pictures(folder: Path, records: list[dict[str, Any]], record: dict[str, Any]) -> list[Path]:
    """The run's learning curves (from its journal) and confusion matrix, drawn into its folder."""
    import numpy as np

    from labnet.record.journal import epoch_history
    from labnet.tracking import plots

    drawn = []
    history = epoch_history(folder)
    if history:
        drawn.append(plots.plot_curves(history, folder / "curves.png"))
    confusion = record.get("confusion")
    if confusion:
        title = f"confusion matrix ({confusion['split']})"
        drawn.append(plots.plot_confusion(np.asarray(confusion["matrix"]), folder / "confusion_matrix.png", title))
    return drawn


def record_sync_error(folder: Path, err: BaseException) -> None:
    """Keep why a folder could not be synced (the next labnet command here says so)."""
    state = _read_sync_state(Path(folder))
    state["error"] = str(err)[:1000] if isinstance(err, TrackingError) else f"{type(err).__name__}: {err}"[:1000]
    state["error_time"] = time.time()
    _write_sync_state(Path(folder), state)


def sync_error(folder: Path) -> str | None:
    """Why the folder's last sync failed (None: it did not, or it was never synced)."""
    return _read_sync_state(Path(folder)).get("error")


def _read_sync_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / SYNC_STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_sync_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_write_text(folder / SYNC_STATE_FILE, json.dumps(state))


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """One sync of a folder at a time (the background syncer and ``labnet sync`` may meet)."""
    if not (folder / JOURNAL_FILE).is_file():
        raise TrackingError(f"{folder} holds no labnet run (no {JOURNAL_FILE})")
    fd = os.open(folder / SYNC_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _chdir(path: str):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
