"""MLflow tracking, a built-in lifecycle plugin like any other (``tracking=none`` blocks it).

The run's journal is its record; this plugin writes into it what MLflow needs to mirror it (the
store, the experiment, the sweep's parent run, the files and the model to log) and has the
background syncer (``syncer``) follow it, so the run never waits for MLflow: ``tracking.sync``
says whether the command returns at once (``background``), waits until MLflow holds the whole
run (``wait``), or leaves it for ``labnet sync`` (``later``). In a sweep, the store, the experiment
and the parent run are created in the launching process (``labnet_sweep_start``) before any job starts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from labnet import hookimpl
from labnet.errors import ConfigError, TrackingError
from labnet.record.files import atomic_write_text
from labnet.tracking.store import (
    EXPERIMENT_ENV,
    PARENT_RUN_ENV,
    experiment_name,
    explicit_uri,
    on_error_policy,
    reachable_or_warn,
)
from labnet.tracking.syncer import ensure_syncer, pending, register, wait_for

SYNC_MODES = ("background", "wait", "later")
MAX_EXPERIMENT_NAME = 500  # MLflow's limit
WAIT_SECONDS = 300.0  # tracking.sync=wait: the longest a run waits for MLflow to hold all of it


def sync_mode(tracking_cfg) -> str:
    mode = tracking_cfg.get("sync", "background")
    if mode not in SYNC_MODES:
        raise ConfigError(
            f"tracking.sync={mode!r}: accepted are background (MLflow is brought up to date while and after the "
            "run, the command does not wait), wait (the command returns when MLflow holds the whole run), later "
            "(only the run's folder; `labnet sync` uploads it)"
        )
    return mode


def _workdir() -> Path:
    """The folder whose syncer mirrors the run: the command's (a Ray job runs where `ray start` ran)."""
    from labnet.run_policy import hydra_runtime

    hc = hydra_runtime()
    return Path(hc.runtime.cwd) if hc is not None and hc.runtime.get("cwd") else Path.cwd()


def warn_unsynced(workdir: Path) -> None:
    """Say which earlier runs of this folder are still not in MLflow, and why (their sync failed)."""
    from labnet.record.journal import owner_alive
    from labnet.tracking.mirror import sync_error

    stuck = []
    for _, folder, _ in pending(workdir):
        error = sync_error(folder)
        if error and not owner_alive(folder):
            stuck.append((folder, error))
    if stuck:
        folder, error = stuck[0]
        print(
            f"labnet: warning: {len(stuck)} earlier run(s) are recorded in their folders but not yet in MLflow "
            f"(e.g. {folder}: {error}); they are retried now, and `labnet sync --wait` shows what happens",
            file=sys.stderr,
        )


# -- hooks --------------------------------------------------------------------------------------


@hookimpl
def labnet_configure(cfg):
    if cfg.tracking.name != "mlflow":
        return
    on_error_policy(cfg.tracking)
    name = experiment_name(cfg)
    if len(name) > MAX_EXPERIMENT_NAME:
        raise ConfigError(
            f"tracking.experiment={name[:40]}... is {len(name)} characters long: MLflow accepts at most "
            f"{MAX_EXPERIMENT_NAME}; choose a shorter name"
        )
    if sync_mode(cfg.tracking) != "later":
        warn_unsynced(_workdir())
        ensure_syncer(_workdir())  # it imports MLflow while the data load and catches up earlier runs


@hookimpl
def labnet_run_start(run, cfg, model):
    if cfg.tracking.name != "mlflow":
        return
    tracking = cfg.tracking
    uri = explicit_uri(tracking)
    reachable = reachable_or_warn(
        tracking, uri, "training without MLflow: the run is recorded in its folder, and `labnet sync` uploads it"
    )
    run.journal.append(
        "mlflow",
        uri=uri,
        cwd=str(_workdir()),
        experiment=experiment_name(cfg),
        experiment_id=os.environ.get(EXPERIMENT_ENV),
        parent_run_id=os.environ.get(PARENT_RUN_ENV),
    )
    register(_workdir(), run.output_dir, run.run_key, uri)
    mode = sync_mode(tracking)
    if mode != "later" and reachable:
        ensure_syncer(_workdir())
    if mode != "later" and reachable:
        run.info["mlflow_sync"] = SyncWatch(run.output_dir, tracking)
    if mode == "wait" and reachable:
        run.info.setdefault("after_end", []).append(lambda: wait_until_synced(run.output_dir, tracking))


class SyncWatch:
    """What the training process learns of its background sync: at an epoch's end, whether the syncer failed
    (a stat of the folder's sync state; read only when it changed)."""

    def __init__(self, folder: Path, tracking_cfg) -> None:
        from labnet.record.result import SYNC_STATE_FILE

        self.path, self.policy = folder / SYNC_STATE_FILE, on_error_policy(tracking_cfg)
        self.seen_mtime, self.warned = 0.0, False

    def check(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self.seen_mtime:
            return
        self.seen_mtime = mtime
        try:
            error = json.loads(self.path.read_text()).get("error")
        except (OSError, ValueError):
            return
        if not error:
            return
        folder = self.path.parent
        if self.policy == "fail":
            raise TrackingError(
                f"MLflow tracking failed: {error}. The run is recorded in {folder} up to here (its journal and "
                f"last checkpoint): `labnet sync {folder}` uploads it once the store is back, and "
                f"`labnet resume {folder}` continues it; use tracking.on_error=warn to train on without MLflow"
            )
        if not self.warned:
            self.warned = True
            print(
                f"labnet: warning: MLflow tracking failed ({error}); training goes on, the run is recorded in "
                f"{folder}, and MLflow is brought up to date when the store is back (or by `labnet sync`)",
                file=sys.stderr,
            )


def wait_until_synced(folder: Path, tracking_cfg) -> None:
    """``tracking.sync=wait``: return when MLflow holds the whole run; say so when it can't."""
    if wait_for(_workdir(), [folder], WAIT_SECONDS):
        return
    from labnet.tracking.mirror import sync_error

    error = sync_error(folder)
    message = (
        f"MLflow does not hold this run yet ({error or f'not synced after {WAIT_SECONDS:.0f} s'}); it is recorded "
        f"in {folder}, and `labnet sync {folder}` uploads it"
    )
    if on_error_policy(tracking_cfg) == "fail":
        raise TrackingError(message)
    print(f"labnet: warning: {message}", file=sys.stderr)


@hookimpl(trylast=True)
def labnet_epoch_end(run):
    watch = run.info.get("mlflow_sync")
    if watch is not None:
        watch.check()


@hookimpl(trylast=True)
def labnet_run_end(run, status, metrics, model, error):
    if run.cfg is None or run.cfg.tracking.name != "mlflow" or run.journal is None:
        return
    from labnet.build import model_spec

    folder, journal, hc = run.output_dir, run.journal, run.hydra
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(run.cfg, resolve=True))
    overrides = list(hc.overrides.task) if hc is not None else []
    atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))
    for name in ("config.yaml", "overrides.yaml"):
        journal.append("artifact", path=name, dest=None)
    for path in map(Path, run.info.get("artifacts", [])):  # files plugins listed, kept in their subfolder
        relative = path.resolve().relative_to(folder.resolve()) if path.is_absolute() else path
        journal.append("artifact", path=str(relative), dest=path.parent.name if path.parent != folder else None)
    if model is not None and run.loss is not None and run.cfg.tracking.get("log_model", True):
        spec = {**model_spec(model), "loss": run.loss.name}
        atomic_write_text(folder / "model_spec.json", json.dumps(spec, default=str))
        journal.append("model", weights="weights.npz", spec="model_spec.json")
    journal.append("pictures", confusion=_confusion(run, model))


def _confusion(run, model) -> dict | None:
    """The confusion matrix of the final model on its test split (else validation, else training)."""
    from labnet.train.metrics import confusion_matrix, labels_of, predicted_labels

    data = run.data
    if data is None or model is None or data.num_classes <= 1:
        return None
    name, split = next(
        (n, s) for n, s in (("test", data.test), ("val", data.val), ("train", data.train)) if s is not None
    )
    matrix = confusion_matrix(labels_of(split.y), predicted_labels(model.predict(split.x)), data.num_classes)
    return {"matrix": matrix.tolist(), "split": name}


@hookimpl
def labnet_sweep_start(sweep):
    from labnet.tracking.sweep_summary import start_parent_run

    if sweep.cfg.tracking.name != "mlflow":
        return
    tracking = sweep.cfg.tracking
    sync_mode(tracking)
    # checked at once: creating the parent run would spend MLflow's ~4 minutes of retries first
    if reachable_or_warn(tracking, explicit_uri(tracking), "the sweep runs without MLflow (no parent run)"):
        start_parent_run(sweep)


@hookimpl(tryfirst=True)  # completes `results` for the other hooks
def labnet_sweep_end(sweep, results):
    from labnet.tracking.sweep_summary import finish_parent_run

    if "mlflow_parent_run_id" in sweep.info:
        finish_parent_run(sweep, results)
