"""Training studies: a sweep whose parent run holds one comparison plot and table, from real runs.

A built-in plugin like the MLflow tracker. An experiment becomes a study by naming one in its
config (``experiments/optimizer_compare_mnist.yaml`` and friends)::

    study:
      name: optimizer_compare_mnist   # file names: <sweep dir>/<name>.png and <name>.csv
      plot: train_loss_curves         # one of labnet.studies.plots.PLOTS
      label: optimizer.name           # the config key(s) naming each job's line
      labels: {sgd: SGD}              # optional display names of values

Plot kinds and what this plugin records in each job to draw them (in ``run.output_dir``):

- ``train_loss_curves``: the training loss of every step (``study_steps.csv``); options ``smooth``
  (running-mean window), ``tail`` (steps averaged for the final loss), ``threshold``, ``ylim``;
- ``paths``: the model's parameters after every epoch (``study_points.csv``, for small models such
  as the ``surface`` layer's point); options ``xlim``, ``ylim``;
- ``metric_curves``: a per-epoch ``metric`` (default ``train_accuracy``), one panel per value of
  the config key ``panel``;
- ``train_test_gap``: adds ``train_eval_accuracy`` / ``train_eval_loss`` to each epoch's metrics (the
  training split in evaluation mode, as the book measures it: no dropout) and plots it against
  ``val_accuracy``;
- ``hparam_search``: the objective against ``x`` (default ``optimizer.lr``) colored by ``color``
  (default ``model.weight_decay``), with the learning curves of the ``top`` best trials.

At the sweep's end (``labnet_sweep_end``, in the launching process) the plot and table are written
to the sweep folder and, when the sweep is tracked, logged on its parent MLflow run. A job skipped
because it already finished in the store is read from its earlier output folder. A plot that cannot
be drawn is reported as a warning: it never costs the sweep its summary.

The package: this module is the plugin (its hooks); ``jobs`` what each job records and how the
study reads it back; ``plots`` the plot and table of each kind; ``components`` the layer, loss and
data sets the studies use, which this plugin registers like any other components.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labnet import hookimpl
from labnet.errors import ConfigError
from labnet.studies.components import FunctionData, MnistSubset, Surface, Value
from labnet.studies.jobs import POINTS_FILE, STEPS_FILE, Job, Recorder, read_table


@hookimpl
def labnet_layers():
    return [Surface]


@hookimpl
def labnet_losses():
    return [Value]


@hookimpl
def labnet_datasets():
    return [FunctionData, MnistSubset]


def study_of(cfg) -> dict[str, Any] | None:
    """The config's ``study`` node as a dict (``None`` when there is none), checked."""
    node = OmegaConf.select(cfg, "study", default=None) if isinstance(cfg, DictConfig) else None
    if node is None:
        return None
    from labnet.studies.plots import PLOTS

    study = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    if not isinstance(study, dict) or study.get("plot") not in PLOTS:
        plot = study.get("plot") if isinstance(study, dict) else study
        raise ConfigError(f"study.plot={plot!r}: accepted are {', '.join(PLOTS)}")
    study.setdefault("name", study["plot"])
    return study


# -- in each job: record what the plot needs (jobs.Recorder) ---------------------------------------


@hookimpl
def labnet_run_start(run, cfg, model):
    study = study_of(cfg)
    if study is not None:
        run.info["study"] = Recorder(study, model)


@hookimpl
def labnet_epoch_end(run, metrics, model):
    recorder = run.info.get("study")
    if recorder is not None:
        recorder.epoch_end(run, metrics, model)


@hookimpl
def labnet_run_end(run):
    recorder = run.info.get("study")
    if recorder is not None:
        run.info.setdefault("artifacts", []).extend(recorder.write(run.output_dir))


# -- in the launching process: the comparison -------------------------------------------------------


@hookimpl
def labnet_sweep_start(sweep):
    study_of(sweep.cfg)  # a bad study node fails before any job starts


def _earlier_output_dir(result: dict[str, Any], sweep) -> Path | None:
    """Where a job skipped as already finished ran before: its run's ``labnet.output_dir`` tag, read from the
    sweep's tracking store (:mod:`labnet.compare.stores`: a SQLite file without importing MLflow)."""
    if not result.get("run_id") or not sweep.info.get("mlflow_uri"):
        return None
    from labnet.compare.stores import open_store

    try:
        store = open_store(sweep.info["mlflow_uri"])
        try:
            run = store.run(result["run_id"])
        finally:
            store.close()
    except Exception:  # a store that cannot be read: the job is drawn from what its result holds
        return None
    tag = run["tags"].get("labnet.output_dir") if run is not None else None
    return Path(tag) if tag else None


def load_job(result: dict[str, Any], sweep):
    """A job's result plus the files this plugin recorded in its output folder."""
    folder = Path(result["output_dir"]) if result.get("output_dir") else None
    history = result.get("history")
    if result.get("skipped"):
        folder = _earlier_output_dir(result, sweep)
        earlier = folder / "result.json" if folder is not None else None
        if earlier is not None and earlier.is_file():
            history = json.loads(earlier.read_text()).get("history")
    job = Job(result=result, history=history or [])
    if folder is not None:
        job.steps, job.points = read_table(folder / STEPS_FILE), read_table(folder / POINTS_FILE)
    return job


def draw_study(study: dict[str, Any], results: list[dict[str, Any]], sweep) -> list[Path]:
    from labnet.studies.plots import PLOTS

    jobs = [load_job(r, sweep) for r in results]
    return PLOTS[study["plot"]](study, jobs, Path(sweep.dir))


def _print_table(path: Path, limit: int = 16) -> None:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows[:limit]:
        shown = "  ".join(f"{k}={v}" for k, v in row.items() if k not in ("job", "label", "status", "rank") and v)
        print(f"  {row.get('label')}: {shown}")
    if len(rows) > limit:
        print(f"  ... {len(rows) - limit} more rows in {path.name}")


@hookimpl  # (after the tracker's, tryfirst: it adds the jobs whose results stayed on other machines)
def labnet_sweep_end(sweep, results):
    """Draw the study's plot and table into the sweep folder; log them on the parent MLflow run."""
    study = study_of(sweep.cfg)
    if study is None or not results:
        return
    try:
        files = draw_study(study, results, sweep)
    except Exception as err:  # the sweep's own summary must still be written
        print(
            f"labnet: warning: study {study['name']!r}: the plot failed: {type(err).__name__}: {err}", file=sys.stderr
        )
        return
    print(f"labnet: study {study['name']}: {', '.join(str(f) for f in files)}")
    for path in files:
        if path.suffix == ".csv":
            _print_table(path)
    if sweep.info.get("mlflow_parent_run_id"):  # (tracked: the tracker's labnet_sweep_end has run)
        from labnet.tracking.sweep_summary import log_on_parent

        log_on_parent(sweep, files)
        # health.histograms=true: each job's activation histograms (the book's figs. 6-10 to 6-14) on the parent too
        for result in results:
            label = "-".join(str(result.get("params", {}).get(k)) for k in [study.get("label")] if k) or "job"
            pngs = sorted(Path(result.get("output_dir") or ".").glob("health/activations_*.png"))
            log_on_parent(sweep, pngs, f"activations/{result.get('job')}-{label}")
