"""A sweep's parent MLflow run: created before any job starts, summarised after the last one."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labnet import __version__
from labnet.compare.plot import X_PARAM, plot_objective
from labnet.params import param_entries, param_value
from labnet.record.journal import owner_alive
from labnet.record.result import RunResult
from labnet.store_uri import absolute_store_uri
from labnet.sweeps.best import best_result
from labnet.sweeps.jobs import PRIOR_RUNS_FILE
from labnet.tracking.mirror import MAX_PARAMS_PER_BATCH, Mirror, find_or_create_experiment
from labnet.tracking.prior_runs import prior_runs
from labnet.tracking.store import EXPERIMENT_ENV, PARENT_RUN_ENV, experiment_name
from labnet.tracking.sweep_description import NOTE_TAG, describe, look_further, shared_params
from labnet.tracking.sweep_table import job_records, replicate_groups, summary_columns, summary_rows, write_csv
from labnet.tracking.syncer import pending


def start_parent_run(sweep) -> None:
    """Create the store, the experiment and the parent run here, so parallel jobs only attach to them."""
    import mlflow

    quiet_mlflow_logs()
    # (not mlflow.set_tracking_uri: MLflow's process-wide URI would send every later sweep of this process, a
    # notebook's, to this one's store; the jobs find it in MLFLOW_TRACKING_URI, set below for the sweep only)
    uri = sweep.cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    uri = absolute_store_uri(uri)
    mirror = Mirror()
    client = mirror.client(uri)
    catch_up(mirror)  # runs of earlier commands whose process died: KILLED with their checkpoints, resumable
    experiment_id = find_or_create_experiment(client, experiment_name(sweep.cfg), sweep.cfg.dataset.get("name"))
    overrides = sweep_overrides(sweep.cfg)
    sweep_key = hashlib.sha256(json.dumps([experiment_id, overrides]).encode()).hexdigest()[:16]
    rerun_all = OmegaConf.select(sweep.cfg, "sweep.rerun", default="missing") == "all"
    previous = (
        []
        if rerun_all
        else client.search_runs(
            [experiment_id],
            filter_string=f"tags.`labnet.sweep_key` = '{sweep_key}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
    )
    if previous:  # the same multirun command again: its parent run continues
        parent = previous[0]
        client.update_run(parent.info.run_id, status="RUNNING")
    else:
        parent = client.create_run(
            experiment_id,
            run_name=f"sweep-{sweep.id}",
            tags={
                "labnet.sweep_id": sweep.id,
                "labnet.version": __version__,
                "labnet.overrides": " ".join(overrides),
                "labnet.role": "sweep",
                "labnet.sweep_key": sweep_key,
            },
        )
    if not rerun_all:
        (sweep.dir / PRIOR_RUNS_FILE).write_text(json.dumps(prior_runs(client, experiment_id)))
    atexit.register(_end_interrupted_parent, uri, parent.info.run_id)
    sweep.info.update(mlflow_parent_run_id=parent.info.run_id, mlflow_uri=uri, mlflow_experiment_id=experiment_id)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # jobs (in this process or spawned ones) use the same store
    os.environ[PARENT_RUN_ENV] = parent.info.run_id
    os.environ[EXPERIMENT_ENV] = experiment_id
    (sweep.dir / "mlflow.json").write_text(json.dumps({"uri": uri, "parent_run_id": parent.info.run_id}))


def quiet_mlflow_logs() -> None:
    """MLflow's INFO lines in the launching process ("Creating initial MLflow database tables...") say
    nothing a user acts on, and come between labnet's own lines; its warnings and errors still show."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def catch_up(mirror: Mirror) -> None:
    """Bring MLflow up to date with the runs of this folder whose process has ended."""
    for marker, folder, uri in pending(Path.cwd()):
        if not folder.is_dir():
            marker.unlink(missing_ok=True)
            continue
        if owner_alive(folder):
            continue
        try:
            if mirror.sync(folder, uri).complete:
                marker.unlink(missing_ok=True)
        except Exception as err:  # left for the background syncer and `labnet sync`
            print(f"labnet: warning: {folder} could not be synced to MLflow: {err}", file=sys.stderr)


def sync_jobs(mirror: Mirror, results: list[RunResult]) -> None:
    """The jobs' runs, complete in MLflow before the sweep's summary reads them (idempotent: the background
    syncer may have done it already)."""
    for result in results:
        folder = Path(result.output_dir) if result.output_dir else None
        if folder is None or not (folder / "journal.jsonl").is_file():
            continue
        try:
            result.run_id = mirror.sync(folder).run_id or result.run_id
        except Exception as err:
            print(f"labnet: warning: {folder} could not be synced to MLflow: {err}", file=sys.stderr)


def _end_interrupted_parent(uri: str, run_id: str) -> None:
    """A sweep stopped before its end (Ctrl-C): its parent run is KILLED, and the same command resumes it."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).set_terminated(run_id, status="KILLED")
    except Exception:
        pass


def results_from_mlflow(client, sweep, known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs of this sweep whose result.json is not on this machine (Ray on machines without a shared
    disk keep it where the job ran), read back from their MLflow runs."""
    seen = {r.get("run_id") for r in known}
    runs = client.search_runs(
        [sweep.info["mlflow_experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{sweep.info['mlflow_parent_run_id']}' "
        f"and tags.`labnet.sweep_id` = '{sweep.id}'",
        max_results=50000,
    )
    found = []
    for run in runs:
        if run.info.run_id in seen:
            continue
        tags, metrics = run.data.tags, run.data.metrics
        objective = tags.get("labnet.objective", "objective")
        found.append(
            RunResult.from_dict(
                {
                    "job": int(tags.get("labnet.job", -1)),
                    "overrides": tags.get("labnet.overrides", "").split(),
                    "status": run.info.status,
                    "error": tags.get("labnet.error"),
                    "objective_metric": objective,
                    "objective": metrics.get(f"best_{objective}", float("nan")),
                    "metrics": dict(metrics),
                    "params": {k: param_value(v) for k, v in run.data.params.items() if k != "labnet.plugins"},
                    "run_id": run.info.run_id,
                    "output_dir": tags.get("labnet.output_dir"),
                }
            )
        )
    return found


def finish_parent_run(sweep, results: list[dict[str, Any]]) -> None:
    """Give the parent run what a user opening it looks for, and end it: the params every job shared, a
    description naming the best job and the commands to look further, job counts as tags, the summary
    tables (best first) and the objective-vs-lr plot.

    Jobs missing from ``results`` (their result.json is on another machine) are added to it, in place,
    from their MLflow runs, so the sweep's report counts them too."""
    from mlflow.entities import Metric, RunTag

    mirror = Mirror()
    client = mirror.client(sweep.info["mlflow_uri"])
    parent = sweep.info["mlflow_parent_run_id"]
    atexit.unregister(_end_interrupted_parent)
    sync_jobs(mirror, results)
    results.extend(results_from_mlflow(client, sweep, results))
    results.sort(key=lambda r: r.job)
    objective = next((r.get("objective_metric") for r in results if r.get("objective_metric")), "val_accuracy")
    rows, params = summary_rows(job_records(results, child_names(client, sweep)))
    log_on_parent(sweep, summary_files(sweep.dir, rows, params, objective))
    counts = {
        "jobs": len(results),
        "finished": sum(1 for r in results if r.get("status") == "FINISHED"),
        "failed": sum(1 for r in results if r.get("status") == "FAILED"),
        "killed": sum(1 for r in results if r.get("status") == "KILLED"),
        "not run": sum(1 for r in results if r.get("status") == "SKIPPED"),
    }
    overrides = sweep_overrides(sweep.cfg)
    (sweep.dir / "overrides.txt").write_text("\n".join(overrides) + "\n")
    log_on_parent(sweep, [sweep.dir / "overrides.txt"])  # (in full: the description may cut them)
    commands = look_further(sweep.id, sweep.info["mlflow_uri"])
    sweep.info["look_further"] = commands
    best = best_result(results)
    if best is not None:
        sweep.info["best_name"] = next((r["run_name"] for r in rows if r.get("job") == best.job), None)
    note = describe(sweep.id, rows, params, objective, counts, commands, overrides)
    tags = {
        NOTE_TAG: note,
        "labnet.objective": objective,
        "labnet.jobs": str(counts["jobs"]),  # counts as tags: as metrics they drew charts of one point
        **{
            f"labnet.{what.replace(' ', '_')}_jobs": str(n)
            for what, n in counts.items()
            if what != "jobs" and (n or what in ("finished", "failed"))
        },
    }
    if rows and rows[0].get("objective") is not None:
        tags.update({"labnet.best_run_id": str(rows[0].get("run_id")), "labnet.best_run": str(rows[0]["run_name"])})
    metrics = []
    if rows and rows[0].get("objective") is not None:  # the sweep's result, comparable across sweeps
        metrics.append(Metric(f"best_{objective}", float(rows[0]["objective"]), int(time.time() * 1000), 0))
    client.log_batch(parent, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    _log_shared_params(client, parent, shared_params(results))
    status = "FAILED" if results and counts["finished"] == 0 else "FINISHED"
    client.set_terminated(parent, status=status)
    for env in (PARENT_RUN_ENV, EXPERIMENT_ENV):
        os.environ.pop(env, None)


def sweep_overrides(cfg) -> list[str]:
    return sorted(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])


def child_names(client, sweep) -> dict[str, str]:
    """The MLflow run names of the sweep's jobs, by run id."""
    runs = client.search_runs(
        [sweep.info["mlflow_experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{sweep.info['mlflow_parent_run_id']}'",
        max_results=50000,
    )
    return {run.info.run_id: run.info.run_name for run in runs}


def summary_files(folder: Path, rows, params, objective: str) -> list[Path]:
    """summary.csv, summary_by_config.csv (replicates) and objective_vs_lr.png, written into ``folder``."""
    if not rows:
        return []
    files = [write_csv(folder / "summary.csv", rows, summary_columns(rows, params))]
    grouped = replicate_groups(rows, params, objective)
    if grouped:
        files.append(write_csv(folder / "summary_by_config.csv", grouped, list(grouped[0])))
    try:
        files.append(plot_objective(rows, params, folder / "objective_vs_lr.png", x=X_PARAM))
    except ValueError:  # no job has an lr and a finite objective: no picture
        pass
    return files


def log_on_parent(sweep, files: list[Path], artifact_path: str | None = None) -> None:
    """Files logged on the sweep's parent run, when it has one: the summary's, and those of a plugin whose
    ``labnet_sweep_end`` runs after the tracker's (a study's plot and table)."""
    parent = sweep.info.get("mlflow_parent_run_id")
    if not parent or not files:
        return
    client = Mirror().client(sweep.info["mlflow_uri"])
    for path in files:
        client.log_artifact(parent, str(path), artifact_path)


def _log_shared_params(client, parent: str, shared: dict[str, Any]) -> None:
    """The params every job shared, as the parent's params (those it has from an earlier run of the same
    command are kept: MLflow params never change)."""
    from mlflow.entities import Param

    have = client.get_run(parent).data.params
    entries, _ = param_entries({k: v for k, v in shared.items() if k not in have})
    batch = [Param(k, v) for k, v in entries]
    for i in range(0, len(batch), MAX_PARAMS_PER_BATCH):
        client.log_batch(parent, params=batch[i : i + MAX_PARAMS_PER_BATCH])
