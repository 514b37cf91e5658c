"""MLflow tracking, a built-in lifecycle plugin like any other (``tracking=none`` blocks it).

Every MLflow call of a run happens on one background thread, fed through a queue:
importing MLflow, creating the run and logging cost training nothing but a queue put
per epoch, and metrics go out in one ``log_batch`` per epoch. In a sweep, the store,
the experiment and the parent run are created in the launching process
(``labnet_sweep_start``) before any job starts; jobs attach to the parent through
the environment.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labnet import __version__, hookimpl
from labnet.errors import TrackingError

PARENT_RUN_ENV = "LABNET_MLFLOW_PARENT_RUN_ID"
EXPERIMENT_ENV = "LABNET_MLFLOW_EXPERIMENT_ID"
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def explicit_uri(tracking_cfg) -> str | None:
    return tracking_cfg.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or None


def check_reachable(uri: str | None) -> None:
    """Fail fast, before training, on a store that cannot be reached."""
    if not uri:
        return
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read()
        except Exception as err:
            raise TrackingError(
                f"the MLflow tracking server at tracking.uri={uri} cannot be reached ({err}); start it, fix "
                "tracking.uri, or train without it: tracking.on_error=warn (metrics kept locally) or tracking=none"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :].split("?")[0]).expanduser().resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(
                f"tracking.uri={uri}: the folder {folder} does not exist or is not writable; "
                "point tracking.uri at a writable place, or use tracking=none"
            )


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def param_entries(flat: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """Config entries as MLflow params (strings within MLflow's length limit) and the truncated keys."""
    entries, truncated = [], []
    for key, value in flat.items():
        text = "None" if value is None else str(value)
        if len(text) > MAX_PARAM_LENGTH:
            text = text[: MAX_PARAM_LENGTH - 15] + "...[truncated]"
            truncated.append(key)
        entries.append((key, text))
    return entries, truncated


class _Worker:
    """One thread running queued MLflow calls in order; the first error stops the rest."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="labnet-mlflow", daemon=True)
        self.thread.start()

    def submit(self, fn, *args) -> None:
        self.queue.put((fn, args))

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as err:  # kept and reported by the run's end
                    self.error = err

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


class MlflowRun:
    """The MLflow side of one labnet run."""

    def __init__(self, run, cfg) -> None:
        self.run, self.cfg = run, cfg
        self.tracking = cfg.tracking
        self.on_error = self.tracking.get("on_error", "fail")
        if self.on_error not in ("fail", "warn"):
            raise TrackingError(f"tracking.on_error={self.on_error!r}: accepted are fail, warn")
        self.log_every = int(self.tracking.get("log_every") or 0)
        uri = explicit_uri(self.tracking)
        try:
            check_reachable(uri)
        except TrackingError as err:
            if self.on_error == "fail":
                raise
            print(f"labnet: warning: {err}; training without MLflow", file=sys.stderr)
            self.worker = None
            return
        self.client = self.run_id = None
        self.worker = _Worker()
        self.worker.submit(self._start, uri)

    # -- on the worker thread ---------------------------------------------------------------
    def _start(self, uri: str | None) -> None:
        import mlflow
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        from labnet.config import flatten_config
        from labnet.sweep import current_sweep_id

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        if uri:
            mlflow.set_tracking_uri(uri)
        self.uri = mlflow.get_tracking_uri()
        self.client = client = MlflowClient(self.uri)
        experiment_id = os.environ.get(EXPERIMENT_ENV) or _experiment_id(client, experiment_name(self.cfg))
        hc = self.run.info.get("hydra")
        tags = {
            "labnet.version": __version__,
            "labnet.objective": self.run.objective_metric,
            "labnet.plugins": ", ".join(self.run.info["manager"].distributions()),
            "labnet.output_dir": str(self.run.output_dir.resolve()),
        }
        if hc is not None:
            tags["labnet.overrides"] = " ".join(hc.overrides.task)
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        if current_sweep_id():
            tags["labnet.sweep_id"] = current_sweep_id()
        if os.environ.get(PARENT_RUN_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
        tags["labnet.config_hash"] = self.run.info.get("config_hash", "")
        resumed = self.run.info.get("resume_run")
        if resumed:  # an interrupted job of this sweep continues in its own run
            self.run_id = resumed["run_id"]
            client.update_run(self.run_id, status="RUNNING")
            client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            self.run.info["mlflow_run_id"] = self.run_id
            self._prepare_end()
            return
        mlrun = client.create_run(experiment_id, run_name=self.run.name, tags=tags)
        self.run_id = mlrun.info.run_id
        self.run.info["mlflow_run_id"] = self.run_id
        params, truncated = param_entries(flatten_config(self.cfg))
        params.append(("labnet.plugins", tags["labnet.plugins"]))
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            chunk = [Param(k, v) for k, v in params[i : i + MAX_PARAMS_PER_BATCH]]
            client.log_batch(self.run_id, params=chunk)
        if truncated:
            client.log_batch(self.run_id, tags=[RunTag("labnet.truncated_params", ", ".join(truncated))])
        self._prepare_end()

    def _prepare_end(self) -> None:
        """Import now, while training runs, what the run's end needs."""
        import mlflow.pyfunc  # noqa: F401

        from labnet.tracking import plots

        plots.pyplot()

    def _log_metrics(self, items: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, v, step in items]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])

    def _finish(self, status: str, error: str | None, artifacts: dict[str, Any]) -> None:
        import mlflow.pyfunc

        client, run_id = self.client, self.run_id
        out = Path(artifacts["dir"])
        (out / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        (out / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(artifacts["overrides"])))
        from labnet.tracking import plots

        files = [out / "config.yaml", out / "overrides.yaml"]
        if self.run.history:
            files.append(plots.plot_curves(self.run.history, out / "curves.png"))
        if artifacts.get("confusion") is not None:
            matrix, split = artifacts["confusion"]
            files.append(plots.plot_confusion(matrix, out / "confusion_matrix.png", f"confusion matrix ({split})"))
        if artifacts.get("weights"):
            files.append(Path(artifacts["weights"]))
        for path in files:
            client.log_artifact(run_id, str(path))
        for path in artifacts["extra"]:  # files plugins listed in run.info["artifacts"], kept in their subfolder
            client.log_artifact(run_id, str(path), path.parent.name if path.parent != out else None)
        if artifacts.get("log_model") and artifacts.get("weights") and artifacts.get("spec"):
            # save_model + log_artifacts: the same pyfunc model as log_model, at a fraction of the cost
            model_dir = out / "mlflow_model"
            if model_dir.exists():
                shutil.rmtree(model_dir)
            # inputs vary in shape and dtype, so no signature: say nothing about not inferring one
            logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
            mlflow.pyfunc.save_model(
                str(model_dir),
                python_model=str(PYFUNC_CODE),
                artifacts={"weights": str(artifacts["weights"]), "spec": str(artifacts["spec"])},
                pip_requirements=[f"labnet=={__version__}"],
            )
            client.log_artifacts(run_id, str(model_dir), "model")
        if error:
            client.set_tag(run_id, "labnet.error", error[:5000])
        client.set_terminated(run_id, status=status)

    # -- on the training thread -------------------------------------------------------------
    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.worker is None:
            return
        self._raise_if_failed()
        items = [(k, v, epoch) for k, v in metrics.items() if isinstance(v, (int, float))]
        if self.log_every:
            steps, losses = self.run.step_numbers, self.run.step_losses
            keep = steps % self.log_every == 0
            items += [("train_loss_step", v, s) for s, v in zip(steps[keep], losses[keep], strict=True)]
        self.worker.submit(self._log_metrics, items)

    def end(self, status: str, metrics: dict[str, float], model, error) -> None:
        if self.worker is None:
            self._keep_locally()
            return
        final = [(k, v, self.run.epoch) for k, v in metrics.items() if k.startswith(("test_", "best_"))]
        self.worker.submit(self._log_metrics, final)
        self.worker.submit(self._finish, status, str(error) if error else None, self._artifacts(model))
        self.worker.close()
        if self.worker.error is not None:
            self._keep_locally()
            message = (
                f"MLflow tracking failed ({type(self.worker.error).__name__}: {self.worker.error}); "
                f"the run's metrics are kept in {self.run.output_dir / 'metrics.json'}"
            )
            if self.on_error == "fail" and status == "FINISHED":
                raise TrackingError(message)
            print(f"labnet: warning: {message}", file=sys.stderr)

    def _raise_if_failed(self) -> None:
        if self.worker.error is not None and self.on_error == "fail":
            self._keep_locally()
            raise TrackingError(
                f"MLflow tracking failed: {type(self.worker.error).__name__}: {self.worker.error}; "
                f"metrics so far are kept in {self.run.output_dir / 'metrics.json'} and the last checkpoint in "
                f"{self.run.output_dir / 'checkpoint.npz'}; use tracking.on_error=warn to train on without MLflow"
            )

    def _keep_locally(self) -> None:
        import json

        self.run.output_dir.mkdir(parents=True, exist_ok=True)
        (self.run.output_dir / "metrics.json").write_text(json.dumps(self.run.history, indent=1))

    def _artifacts(self, model) -> dict[str, Any]:
        import json

        from labnet.build import model_spec
        from labnet.train.metrics import confusion_matrix, labels_of, predicted_labels

        info, out = self.run.info, self.run.output_dir
        data, loss = info.get("data"), info.get("loss")
        confusion = None
        if data is not None and model is not None and data.num_classes > 1:
            split_name, split = next(
                ((n, s) for n, s in (("test", data.test), ("val", data.val), ("train", data.train)) if s is not None)
            )
            predicted = predicted_labels(model.predict(split.x))
            confusion = (confusion_matrix(labels_of(split.y), predicted, data.num_classes), split_name)
        spec_path = None
        if model is not None and loss is not None:
            spec_path = out / "model_spec.json"
            spec_path.write_text(json.dumps({**model_spec(model), "loss": loss.name}, default=str))
        hc = info.get("hydra")
        return {
            "dir": out,
            "overrides": list(hc.overrides.task) if hc is not None else [],
            "weights": info.get("weights_path"),
            "spec": spec_path,
            "confusion": confusion,
            "log_model": bool(self.tracking.get("log_model", True)),
            "extra": [Path(p) for p in info.get("artifacts", [])],
        }


def experiment_name(cfg) -> str:
    return cfg.tracking.get("experiment") or cfg.dataset.name


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created meanwhile by a parallel job
        return client.get_experiment_by_name(name).experiment_id


# -- hooks --------------------------------------------------------------------------------------


@hookimpl
def labnet_run_start(run, cfg, model):
    if cfg.tracking.name != "mlflow":
        return
    run.info["mlflow"] = MlflowRun(run, cfg)


@hookimpl(trylast=True)
def labnet_epoch_end(run, epoch, metrics):
    tracker = run.info.get("mlflow")
    if tracker is not None:
        tracker.epoch_end(epoch, metrics)


@hookimpl(trylast=True)
def labnet_run_end(run, status, metrics, model, error):
    tracker = run.info.get("mlflow")
    if tracker is not None:
        tracker.end(status, metrics, model, error)


@hookimpl
def labnet_sweep_start(sweep):
    from labnet.tracking.sweep_summary import start_parent_run

    if sweep.cfg.tracking.name == "mlflow":
        start_parent_run(sweep)


@hookimpl
def labnet_sweep_end(sweep, results):
    from labnet.tracking.sweep_summary import finish_parent_run

    if "mlflow_parent_run_id" in sweep.info:
        finish_parent_run(sweep, results)
