"""A sweep's parent MLflow run: created before any job starts, summarised after the last one."""

from __future__ import annotations

import atexit
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labnet import __version__
from labnet.record.journal import owner_alive
from labnet.record.result import RunResult
from labnet.sweep.jobs import PRIOR_RUNS_FILE
from labnet.tracking.mirror import Mirror, find_or_create_experiment
from labnet.tracking.params import param_value
from labnet.tracking.prior_runs import prior_runs
from labnet.tracking.store import EXPERIMENT_ENV, PARENT_RUN_ENV, absolute_store_uri, experiment_name
from labnet.tracking.syncer import pending


def start_parent_run(sweep) -> None:
    """Create the store, the experiment and the parent run here, so parallel jobs only attach to them."""
    import mlflow

    uri = sweep.cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow.set_tracking_uri(uri)
    uri = absolute_store_uri(mlflow.get_tracking_uri())
    mirror = Mirror()
    client = mirror.client(uri)
    catch_up(mirror)  # runs of earlier commands whose process died: KILLED with their checkpoints, resumable
    experiment_id = find_or_create_experiment(client, experiment_name(sweep.cfg))
    overrides = sorted(OmegaConf.select(sweep.cfg, "hydra.overrides.task", default=[]) or [])
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


def summary_rows(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per job with the params that vary between jobs, and the names of those params."""
    params = [r.get("params", {}) for r in results]
    keys = sorted({k for p in params for k in p})
    varying = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in params}) > 1]
    for key in ("optimizer.name", "optimizer.lr"):
        if key not in varying and any(key in p for p in params):
            varying.append(key)
    rows = []
    for r, p in zip(results, params, strict=True):
        row = {
            "job": r.get("job"),
            **{k: p.get(k) for k in varying},
            "status": r.get("status"),
            "objective": r.get("objective"),
            "test_accuracy": (r.get("metrics") or {}).get("test_accuracy"),
            "run_id": r.get("run_id"),
        }
        rows.append(row)
    return rows, varying


REPLICATE_KEYS = ("seed", "sweep.replicate")


def replicate_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std of the objective per configuration when jobs are replicates (differ only by seed)."""
    if not any(r.get("sweep.replicate") for r in rows):
        return []
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key_fields = {
            k: v
            for k, v in row.items()
            if k not in (*REPLICATE_KEYS, "job", "status", "objective", "test_accuracy", "run_id")
        }
        groups.setdefault(json.dumps(key_fields, sort_keys=True, default=str), []).append(row)
    out = []
    for key, members in groups.items():
        values = [
            m["objective"]
            for m in members
            if isinstance(m.get("objective"), (int, float)) and m["objective"] == m["objective"]
        ]
        mean = sum(values) / len(values) if values else float("nan")
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        out.append(
            {
                **json.loads(key),
                "replicates": len(members),
                "finished": len(values),
                "objective": mean,
                "objective_std": std,
            }
        )
    return sorted(out, key=lambda r: -r["objective"] if r["objective"] == r["objective"] else float("inf"))


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
    """Log the summary table and the objective-vs-lr plot on the parent run and end it.

    Jobs missing from ``results`` (their result.json is on another machine) are added to it, in place,
    from their MLflow runs, so the sweep's report counts them too."""
    from labnet.tracking.plots import plot_objective_vs_lr

    mirror = Mirror()
    client = mirror.client(sweep.info["mlflow_uri"])
    parent = sweep.info["mlflow_parent_run_id"]
    atexit.unregister(_end_interrupted_parent)
    sync_jobs(mirror, results)
    results.extend(results_from_mlflow(client, sweep, results))
    results.sort(key=lambda r: r.job)
    rows, _ = summary_rows(results)
    grouped = replicate_groups(rows)
    objective = next((r.get("objective_metric") for r in results if r.get("objective_metric")), "objective")
    table = sweep.dir / "summary.csv"
    if rows:
        with table.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        client.log_artifact(parent, str(table))
        plot = plot_objective_vs_lr(grouped or rows, objective, sweep.dir / "objective_vs_lr.png")
        if plot is not None:
            client.log_artifact(parent, str(plot))
    if grouped:
        table = sweep.dir / "summary_by_config.csv"
        with table.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(grouped[0]))
            writer.writeheader()
            writer.writerows(grouped)
        client.log_artifact(parent, str(table))
    failed = sum(1 for r in results if r.get("status") == "FAILED")
    finished = sum(1 for r in results if r.get("status") == "FINISHED")
    finite = [
        r["objective"]
        for r in results
        if isinstance(r.get("objective"), (int, float)) and r["objective"] == r["objective"]
    ]
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric("jobs", len(results), now, 0), Metric("failed_jobs", failed, now, 0)]
    if finite:
        minimize = "loss" in objective
        metrics.append(Metric(f"best_{objective}", min(finite) if minimize else max(finite), now, 0))
    client.log_batch(
        parent, metrics=metrics, tags=[RunTag("labnet.failed_jobs", str(failed)), RunTag("labnet.objective", objective)]
    )
    status = "FAILED" if results and finished == 0 else "FINISHED"
    client.set_terminated(parent, status=status)
    for env in (PARENT_RUN_ENV, EXPERIMENT_ENV):
        os.environ.pop(env, None)
