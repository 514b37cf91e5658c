"""The process that talks to MLflow for the runs of one labnet process.

Importing MLflow and opening its store cost seconds of CPU. On a thread of the training
process they would hold the GIL the training loop needs between its NumPy calls; here they
run on another core while the run trains, and the run's end only waits for what is left:
its last metrics, two pictures (drawn by two forked painter processes, begun at the last
epoch) and a few files. The training process (``TrackingProcess``
in ``mlflow_tracker``) writes one JSON message per line to this process's stdin and reads
the answers from its stdout:

    {"op": "start", "token": ..., ...}           -> {"op": "started", "token": ..., "run_id": ...}
    {"op": "open"}                               (before the data load: import MLflow, warm up its slow calls)
    {"op": "metrics", "items": [[key, value, step], ...], "pictures": {...} at the last epoch}
    {"op": "finish", "status": ..., ...}         -> {"op": "finished"}
    any failure of a run                         -> {"op": "error", "message": ...}

After an error the rest of that run's messages are skipped (the training process decides,
by ``tracking.on_error``, whether the run goes on). When the input ends while a run is
open, the training process died without ending it: the run ends KILLED, with the reason.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from labnet import __version__

MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def find_or_create_experiment(client, name: str) -> str:
    """The experiment called ``name``, created if it does not exist (by a parallel job, maybe)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created meanwhile by a parallel job
        return client.get_experiment_by_name(name).experiment_id


def draw(kind: str, path: str, data: Any) -> Path:
    """One of a run's pictures: ``curves`` from its history, or its ``confusion`` matrix."""
    import numpy as np

    from labnet.tracking import plots

    if kind == "curves":
        return plots.plot_curves(data, Path(path))
    return plots.plot_confusion(np.asarray(data["matrix"]), Path(path), f"confusion matrix ({data['split']})")


def exit_with_parent(parent: int) -> None:
    """In a painter: exit when this process dies (it would hold the training process's stderr open)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="labnet-painter-watch", daemon=True).start()


class RunLogger:
    """Logs the messages of one run after another to MLflow."""

    def __init__(self, answer: TextIO) -> None:
        self.answer = answer
        self.client, self.uri = None, None
        self.prepared = False
        self.run_id: str | None = None
        self.token: str | None = None
        self.failed = False
        self.drawn: dict[str, Future] = {}  # pictures by what they show, drawn once (maybe ahead of the run's end)
        self.painters: ProcessPoolExecutor | None = None  # draw the pictures while this process logs the rest

    def reply(self, op: str, **fields: Any) -> None:
        """An answer about the current run, with its token (a late answer is not taken for the next run's)."""
        self.answer.write(json.dumps({"op": op, "token": self.token, **fields}) + "\n")
        self.answer.flush()

    def handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "open":  # prepare() imports MLflow while the data load; the store is opened (or created)
            self.prepare()  # at the run's start, so a run failing before it leaves no mlflow.db behind
            return
        if op == "start":
            self.run_id, self.failed, self.drawn, self.token = None, False, {}, message.get("token")
        elif self.failed or self.run_id is None:
            if op == "finish":
                self.run_id = None
                self.reply("finished")
            return
        try:
            getattr(self, op)(message)
        except BaseException as err:  # reported to the training process, which decides what happens
            self.failed = True
            self.reply("error", message=f"{type(err).__name__}: {err}")
            if op == "finish":
                self.run_id = None
                self.reply("finished")

    def _connect(self, uri: str | None) -> None:
        """The client of the store at ``uri`` (MLflow's default when None), opened once."""
        import mlflow
        from mlflow.tracking import MlflowClient

        if self.client is None or self.uri != uri:
            if uri:
                mlflow.set_tracking_uri(uri)
            self.client, self.uri = MlflowClient(mlflow.get_tracking_uri()), uri

    def start(self, m: dict[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        self._connect(m["uri"])
        client = self.client
        tags = dict(m["tags"])
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        if m["resume_run_id"]:  # an interrupted job of a sweep continues in its own run
            self.run_id = m["resume_run_id"]
            client.update_run(self.run_id, status="RUNNING")
            client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        else:
            exp = m["experiment_id"] or find_or_create_experiment(client, m["experiment_name"])
            self.run_id = client.create_run(exp, run_name=m["run_name"], tags=tags).info.run_id
            params = m["params"]
            for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
                client.log_batch(self.run_id, params=[Param(k, v) for k, v in params[i : i + MAX_PARAMS_PER_BATCH]])
            if m["truncated"]:
                client.log_batch(self.run_id, tags=[RunTag("labnet.truncated_params", ", ".join(m["truncated"]))])
        self.reply("started", run_id=self.run_id)
        self.prepare()

    def prepare(self) -> None:
        """Make once, ahead of the first run's end, the slow first calls it makes (fonts, model save)."""
        import numpy as np

        if self.prepared:
            return
        self.prepared = True

        with tempfile.TemporaryDirectory() as tmp:
            draw("curves", str(Path(tmp) / "curves.png"), [{"train_loss": 1.0, "train_accuracy": 0.5}])
            draw("confusion", str(Path(tmp) / "confusion.png"), {"matrix": [[1, 0], [0, 1]], "split": "test"})
            np.savez(Path(tmp) / "weights.npz")
            (Path(tmp) / "spec.json").write_text("{}")
            self._save_model(Path(tmp) / "model", Path(tmp) / "weights.npz", Path(tmp) / "spec.json")
        # MLflow's modules are a large heap; every collection of the oldest generation walked it while the
        # run's end drew its pictures (the confusion matrix took 0.36 s instead of 0.16 s): keep them out of it
        gc.collect()
        gc.freeze()
        if "fork" in multiprocessing.get_all_start_methods():
            # a copy of this warmed-up process, so the run's two pictures are drawn at once on two cores
            self.painters = ProcessPoolExecutor(
                2,
                mp_context=multiprocessing.get_context("fork"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
            for started in [self.painters.submit(int) for _ in range(2)]:
                started.result()

    def _draw(self, pictures: dict[str, Any]) -> list[Future]:
        """Start drawing the run's pictures, each in a painter process (here where there are none)."""
        out, futures = pictures["dir"], []
        for kind, name in (("curves", "curves.png"), ("confusion", "confusion_matrix.png")):
            data = pictures.get(kind)
            if not data:
                continue
            key = json.dumps([kind, out, data])
            if key not in self.drawn:
                path = str(Path(out) / name)
                if self.painters is not None:
                    self.drawn[key] = self.painters.submit(draw, kind, path, data)
                else:
                    self.drawn[key] = done = Future()
                    try:
                        done.set_result(draw(kind, path, data))
                    except Exception as err:
                        done.set_exception(err)
            futures.append(self.drawn[key])
        return futures

    def metrics(self, m: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        if m.get("pictures"):  # the planned last epoch: start drawing, the run's end waits for the pictures
            self._draw(m["pictures"])
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, v, step in m["items"]]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])

    def finish(self, m: dict[str, Any]) -> None:
        client, run_id, out = self.client, self.run_id, Path(m["pictures"]["dir"])
        pictures = self._draw(m["pictures"])  # (begun at the last epoch) while the other files are logged
        for path in m["files"]:
            client.log_artifact(run_id, path)
        for path in map(Path, m["extra"]):  # files plugins listed in run.info["artifacts"], kept in their subfolder
            client.log_artifact(run_id, str(path), path.parent.name if path.parent != out else None)
        if m["model"]:
            model_dir = out / "mlflow_model"
            self._save_model(model_dir, Path(m["model"]["weights"]), Path(m["model"]["spec"]))
            client.log_artifacts(run_id, str(model_dir), "model")
        for picture in pictures:
            client.log_artifact(run_id, str(picture.result()))
        if m["error"]:
            client.set_tag(run_id, "labnet.error", m["error"][:5000])
        client.set_terminated(run_id, status=m["status"])
        self.run_id = None
        self.reply("finished")

    def _save_model(self, model_dir: Path, weights: Path, spec: Path) -> None:
        """save_model + log_artifacts: the same pyfunc model as log_model, at a fraction of the cost."""
        import mlflow.pyfunc

        if model_dir.exists():
            shutil.rmtree(model_dir)
        # inputs vary in shape and dtype, so no signature: say nothing about not inferring one
        logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
        mlflow.pyfunc.save_model(
            str(model_dir),
            python_model=str(PYFUNC_CODE),
            artifacts={"weights": str(weights), "spec": str(spec)},
            pip_requirements=[f"labnet=={__version__}"],
        )

    def end_abandoned(self) -> None:
        """The training process went away without ending its run."""
        if self.run_id is None or self.failed:
            return
        try:
            self.client.set_tag(self.run_id, "labnet.error", "the labnet process ended before its run did")
            self.client.set_terminated(self.run_id, status="KILLED")
        except Exception as err:
            print(f"labnet: could not mark MLflow run {self.run_id} KILLED: {err}", file=sys.stderr)


def incoming(stream: TextIO) -> queue.Queue:
    """The messages read from ``stream`` by a thread, as they arrive; ``None`` after the last."""
    messages: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            messages.put(json.loads(line))
        messages.put(None)

    threading.Thread(target=read, name="labnet-mlflow-input", daemon=True).start()
    return messages


def coalesced(messages: queue.Queue) -> Iterator[dict[str, Any]]:
    """The messages in order, with metrics that queued up meanwhile (MLflow still starting) sent as one batch."""
    nothing = object()
    pending = messages.get()
    while pending is not None:
        message, pending = pending, nothing
        while message["op"] == "metrics":
            try:
                following = messages.get_nowait()
            except queue.Empty:
                break
            if following is None or following["op"] != "metrics":
                pending = following
                break
            message = {
                "op": "metrics",
                "items": message["items"] + following["items"],
                "pictures": following.get("pictures") or message.get("pictures"),
            }
        yield message
        if pending is nothing:
            pending = messages.get()


def main() -> None:
    # Ctrl-C and SIGTERM reach the whole process group: the training process handles them and
    # sends the run's end, which this process must still be alive to log.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # answers go to the original stdout; anything MLflow prints goes to stderr with its logs
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # messages are read from a file of their own: sys.stdin's lock, held by the reading thread, would be
    # inherited locked by the painter processes, whose start closes sys.stdin
    messages = incoming(os.fdopen(os.dup(0), "r"))
    sys.stdin = open(os.devnull)
    import mlflow  # noqa: F401  (the slowest part, done before the first message arrives)

    logger = RunLogger(answer)
    for message in coalesced(messages):
        logger.handle(message)
    logger.end_abandoned()
    if logger.painters is not None:
        logger.painters.shutdown()
    # the training process may be gone and its caller waiting for the end of its output, which this process
    # shares: exit now, without the seconds Python takes to tear MLflow down
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
