"""MLflow tracking, a built-in lifecycle plugin like any other (``tracking=none`` blocks it).

Every MLflow call of a run happens in a process of its own (``mlflow_process``): importing
MLflow and opening the store take seconds of CPU that, on a thread, would hold the GIL the
training loop needs. The training process only writes one JSON line per epoch to it and, at
the run's end, waits for the last metrics, pictures and files. In a sweep, the store, the
experiment and the parent run are created in the launching process (``labnet_sweep_start``)
before any job starts; jobs attach to the parent through the environment.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labnet import __version__, hookimpl
from labnet.errors import TrackingError

PARENT_RUN_ENV = "LABNET_MLFLOW_PARENT_RUN_ID"
EXPERIMENT_ENV = "LABNET_MLFLOW_EXPERIMENT_ID"
MAX_PARAM_LENGTH = 6000
INTERRUPTED_RUN_WAIT = 20.0  # seconds an interrupted run waits for MLflow to log its end


def absolute_store_uri(uri: str) -> str:
    """A relative ``sqlite:///file`` made absolute, so jobs running in other folders (Ray) find the same store."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).expanduser().resolve())
    return uri


def explicit_uri(tracking_cfg) -> str | None:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``; inside a sweep the store its parent run lives in."""
    if os.environ.get(PARENT_RUN_ENV) and os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    uri = tracking_cfg.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or None
    return absolute_store_uri(uri) if uri else None


def on_error_policy(tracking_cfg) -> str:
    """``tracking.on_error``: ``fail`` (stop the run, or a sweep before its jobs) or ``warn`` (go on without it)."""
    policy = tracking_cfg.get("on_error", "fail")
    if policy not in ("fail", "warn"):
        raise TrackingError(f"tracking.on_error={policy!r}: accepted are fail, warn")
    return policy


def reachable_or_warn(tracking_cfg, uri: str | None, without: str) -> bool:
    """Whether the store at ``uri`` can be reached; if not, a TrackingError (``tracking.on_error=fail``)
    or a warning that what comes next goes on ``without`` MLflow, and False."""
    try:
        check_reachable(uri)
    except TrackingError as err:
        if on_error_policy(tracking_cfg) == "fail":
            raise
        print(f"labnet: warning: {err}; {without}", file=sys.stderr)
        return False
    return True


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


class TrackingProcess:
    """The MLflow process (``mlflow_process``) of this labnet process: started by its first tracked run and
    reused by the next ones (the jobs a sweep runs in one process), so MLflow is imported once."""

    _current: TrackingProcess | None = None

    @classmethod
    def get(cls) -> TrackingProcess:
        if cls._current is None or cls._current.proc.poll() is not None:
            cls._current = cls()
        return cls._current

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the labnet this process runs, installed or not
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "OPENBLAS_NUM_THREADS": "1",  # it draws pictures and copies files; the cores are the training's
            "OMP_NUM_THREADS": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labnet.tracking.mlflow_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        self.replies: queue.Queue = queue.Queue()
        self.exited = False
        threading.Thread(target=self._read, name="labnet-mlflow-replies", daemon=True).start()
        atexit.register(self.close)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))
        self.replies.put({"op": "error", "message": f"the MLflow process exited (code {self.proc.wait()})"})
        self.exited = True  # no answer comes any more: nobody waits for one
        self.replies.put({"op": "exited"})

    def send(self, op: str, **fields: Any) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}, default=float) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the reader reports the process's exit

    def close(self) -> None:
        """No more runs: the process exits on its own (every run's end was already waited for)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass


class MlflowRun:
    """The MLflow side of one labnet run, as seen from the training process: messages to the MLflow process."""

    def __init__(self, run, cfg) -> None:
        self.run, self.cfg = run, cfg
        self.tracking = cfg.tracking
        self.on_error = on_error_policy(self.tracking)
        self.log_every = int(self.tracking.get("log_every") or 0)
        self.error: str | None = None
        self.reported = False  # the error was raised to the user, with where the metrics are kept
        self._confusion: dict[str, Any] | None = None  # of the final model, computed once
        uri = explicit_uri(self.tracking)
        if not reachable_or_warn(self.tracking, uri, "training without MLflow"):
            self.process = None
            return
        self.process = TrackingProcess.get()
        self.token = uuid.uuid4().hex
        self.process.send("start", token=self.token, **self._start_message(uri))

    def _start_message(self, uri: str | None) -> dict[str, Any]:
        from labnet.config import flatten_config
        from labnet.sweep import current_sweep_id

        hc = self.run.info.get("hydra")
        plugins = ", ".join(self.run.info["manager"].distributions())
        tags = {
            "labnet.version": __version__,
            "labnet.objective": self.run.objective_metric,
            "labnet.plugins": plugins,
            "labnet.output_dir": str(self.run.output_dir.resolve()),
            "labnet.config_hash": self.run.info.get("config_hash", ""),
        }
        if hc is not None:
            tags["labnet.overrides"] = " ".join(hc.overrides.task)
        if current_sweep_id():
            tags["labnet.sweep_id"] = current_sweep_id()
            if hc is not None:
                tags["labnet.job"] = str(hc.job.num)
        if os.environ.get(PARENT_RUN_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
        params, truncated = param_entries(flatten_config(self.cfg))
        params.append(("labnet.plugins", plugins))
        resumed = self.run.info.get("resume_run")
        return {
            "uri": uri,
            "experiment_id": os.environ.get(EXPERIMENT_ENV),
            "experiment_name": experiment_name(self.cfg),
            "run_name": self.run.name,
            "tags": tags,
            "params": params,
            "truncated": truncated,
            "resume_run_id": resumed["run_id"] if resumed else None,
        }

    def _collect(self, until: str | None = None, timeout: float | None = None) -> bool:
        """Take the MLflow process's answers: all that arrived, or (``until``) up to that one, waiting at most
        ``timeout`` seconds for it; False if it did not come."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                block = until is not None and not self.process.exited
                reply = self.process.replies.get(block=block, timeout=wait if block else None)
            except queue.Empty:
                return until is None or self.process.exited
            if reply["op"] == "exited":
                continue  # (the error before it says so; then the queue runs dry)
            if reply.get("token") not in (None, self.token):
                continue  # about an earlier run of this process, whose end was not waited for
            if reply["op"] == "started":
                self.run.info["mlflow_run_id"] = reply["run_id"]
            elif reply["op"] == "error" and self.error is None:
                self.error = reply["message"]
            if reply["op"] == until:
                return True

    def epoch_end(self, epoch: int, metrics: dict[str, float], model) -> None:
        if self.process is None:
            return
        self._collect()
        self._raise_if_failed()
        items = [(k, v, epoch) for k, v in metrics.items() if isinstance(v, (int, float))]
        if self.log_every:
            steps, losses = self.run.step_numbers, self.run.step_losses
            keep = steps % self.log_every == 0
            items += [("train_loss_step", float(v), int(s)) for s, v in zip(steps[keep], losses[keep], strict=True)]
        last = epoch >= int(self.cfg.trainer.get("epochs") or 0)  # no more training: draw its pictures now
        pictures = self._pictures(model, [*self.run.history, metrics]) if last else None
        self.process.send("metrics", items=items, pictures=pictures)

    def end(self, status: str, metrics: dict[str, float], model, error) -> None:
        if self.process is None:
            self._keep_locally()
            return
        logged = self.run.history[-1] if self.run.history else {}  # (test_* too, with trainer.eval_test)
        final = [
            (k, v, self.run.epoch) for k, v in metrics.items() if k.startswith(("test_", "best_")) and k not in logged
        ]
        self.process.send("metrics", items=final)
        self.process.send("finish", status=status, error=str(error) if error else None, **self._artifacts(model))
        # an interrupted run ends now even when MLflow lags behind (a slow or vanished server)
        timeout = INTERRUPTED_RUN_WAIT if status == "KILLED" else None
        if not self._collect(until="finished", timeout=timeout):
            self._keep_locally()
            print(
                f"labnet: warning: MLflow is still logging this run after {timeout:.0f} s; its process "
                f"(pid {self.process.proc.pid}) goes on in the background and marks the run KILLED; the metrics "
                f"are also kept in {self.run.output_dir / 'metrics.json'}",
                file=sys.stderr,
            )
            return
        if self.error is not None and not self.reported:  # (an error raised at an epoch end was said there)
            self._keep_locally()
            message = (
                f"MLflow tracking failed ({self.error}); "
                f"the run's metrics are kept in {self.run.output_dir / 'metrics.json'}"
            )
            if self.on_error == "fail" and status == "FINISHED":
                raise TrackingError(message)
            print(f"labnet: warning: {message}", file=sys.stderr)

    def _raise_if_failed(self) -> None:
        if self.error is not None and self.on_error == "fail":
            self._keep_locally()
            self.reported = True
            raise TrackingError(
                f"MLflow tracking failed: {self.error}; "
                f"metrics so far are kept in {self.run.output_dir / 'metrics.json'} and the last checkpoint in "
                f"{self.run.output_dir / 'checkpoint.npz'}; use tracking.on_error=warn to train on without MLflow"
            )

    def _keep_locally(self) -> None:
        self.run.output_dir.mkdir(parents=True, exist_ok=True)
        (self.run.output_dir / "metrics.json").write_text(json.dumps(self.run.history, indent=1))

    def _pictures(self, model, history: list[dict[str, float]]) -> dict[str, Any]:
        """What the run's pictures show: its history and the confusion matrix of its final model."""
        from labnet.train.metrics import confusion_matrix, labels_of, predicted_labels

        data = self.run.info.get("data")
        if self._confusion is None and data is not None and model is not None and data.num_classes > 1:
            split_name, split = next(
                ((n, s) for n, s in (("test", data.test), ("val", data.val), ("train", data.train)) if s is not None)
            )
            matrix = confusion_matrix(labels_of(split.y), predicted_labels(model.predict(split.x)), data.num_classes)
            self._confusion = {"matrix": matrix.tolist(), "split": split_name}
        return {"dir": str(self.run.output_dir), "curves": history, "confusion": self._confusion}

    def _artifacts(self, model) -> dict[str, Any]:
        """The files the run's end logs, written here; the pictures are drawn by the MLflow process."""
        from labnet.build import model_spec

        info, out = self.run.info, self.run.output_dir
        hc, loss = info.get("hydra"), info.get("loss")
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        overrides = list(hc.overrides.task) if hc is not None else []
        (out / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        files = [out / "config.yaml", out / "overrides.yaml"]
        weights = info.get("weights_path")
        if weights:
            files.append(Path(weights))
        logged_model = None
        if model is not None and loss is not None and weights and self.tracking.get("log_model", True):
            spec_path = out / "model_spec.json"
            spec_path.write_text(json.dumps({**model_spec(model), "loss": loss.name}, default=str))
            logged_model = {"weights": str(weights), "spec": str(spec_path)}
        return {
            "files": [str(f) for f in files],
            "pictures": self._pictures(model, self.run.history),
            "model": logged_model,
            "extra": [str(p) for p in info.get("artifacts", [])],
        }


def experiment_name(cfg) -> str:
    return cfg.tracking.get("experiment") or cfg.dataset.name


# -- hooks --------------------------------------------------------------------------------------


@hookimpl
def labnet_configure(cfg):
    if cfg.tracking.name == "mlflow":  # MLflow imports while the data load
        TrackingProcess.get().send("open")


@hookimpl
def labnet_run_start(run, cfg, model):
    if cfg.tracking.name != "mlflow":
        return
    run.info["mlflow"] = MlflowRun(run, cfg)


@hookimpl(trylast=True)
def labnet_epoch_end(run, epoch, metrics, model):
    tracker = run.info.get("mlflow")
    if tracker is not None:
        tracker.epoch_end(epoch, metrics, model)


@hookimpl(trylast=True)
def labnet_run_end(run, status, metrics, model, error):
    tracker = run.info.get("mlflow")
    if tracker is not None:
        tracker.end(status, metrics, model, error)


@hookimpl
def labnet_sweep_start(sweep):
    from labnet.tracking.sweep_summary import start_parent_run

    if sweep.cfg.tracking.name != "mlflow":
        return
    tracking = sweep.cfg.tracking
    # checked at once: creating the parent run would spend MLflow's ~4 minutes of retries first
    if reachable_or_warn(tracking, explicit_uri(tracking), "the sweep runs without MLflow (no parent run)"):
        start_parent_run(sweep)


@hookimpl(tryfirst=True)  # completes `results` for the other hooks
def labnet_sweep_end(sweep, results):
    from labnet.tracking.sweep_summary import finish_parent_run

    if "mlflow_parent_run_id" in sweep.info:
        finish_parent_run(sweep, results)
