"""What a multirun's job does before and around its training: skip a job already FINISHED, resume a
KILLED one from its checkpoint (in its own MLflow run), stop launching after a failure (fail_fast),
and record a job that trained nothing or whose process was killed, so the sweep's report counts every job."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labnet.config import flatten_config
from labnet.errors import ConfigError, LabnetError
from labnet.plugins import code_versions
from labnet.record.journal import end_abandoned
from labnet.record.result import RESULT_FILE, RunResult
from labnet.run_policy import hydra_runtime, plugin_manager_for
from labnet.runner import run_experiment
from labnet.sweeps.identity import SWEEP_DIR_ENV, config_hash, replicate_seed, version_changes
from labnet.train.trainer import Interrupted

PRIOR_RUNS_FILE = "prior_runs.json"
FAILED_MARKER = "FAILED_JOB"


def run_job(cfg: DictConfig) -> float:
    """One job of a multirun (see the module's docstring); returns its objective for the sweeper."""
    hc = hydra_runtime()
    job, overrides = hc.job.num, " ".join(hc.overrides.task)
    folder = Path(hc.runtime.output_dir)
    sweep_cfg = cfg.get("sweep") or {}
    _apply_replicate_seed(cfg)
    if sweep_cfg.get("fail_fast") and (earlier := failed_earlier()):
        print(f"labnet: job {job} [{overrides}] not run: sweep.fail_fast after {earlier}", file=sys.stderr, flush=True)
        _unrun_result(hc, cfg, "SKIPPED", f"fail_fast after {earlier}").write(folder)
        return math.nan
    prior = None
    if sweep_cfg.get("rerun") != "all":
        flat, versions = flatten_config(cfg), code_versions(plugin_manager_for(cfg))
        known = prior_runs()
        prior = known.get(config_hash(flat, versions))
        earlier = known.get("params:" + config_hash(flat))
        if prior is None and earlier is not None:
            print(
                f"labnet: job {job} [{overrides}] trained again: the code changed since its finished run "
                f"{earlier['run_id']} ({version_changes(earlier.get('code_versions', {}), versions)}); "
                "to keep those results, run the sweep with the versions that made them",
                flush=True,
            )
    if prior and prior.get("status") == "FINISHED":
        print(f"labnet: job {job} [{overrides}] already finished (run {prior['run_id']}), skipped", flush=True)
        if not (folder / RESULT_FILE).is_file():  # (the same sweep folder again: the finished run is there)
            RunResult(
                status="FINISHED",
                job=job,
                overrides=list(hc.overrides.task),
                skipped=True,
                objective=prior.get("objective", math.nan),
                objective_metric=prior.get("objective_metric", "val_accuracy"),
                run_id=prior["run_id"],
                metrics=prior.get("metrics", {}),
                params=flatten_config(cfg),
            ).write(folder)
        return float(prior.get("objective", math.nan))
    resume = None
    if prior and prior.get("status") == "KILLED" and prior.get("checkpoint") and Path(prior["checkpoint"]).is_file():
        resume = prior
        OmegaConf.update(cfg, "trainer.resume", prior["checkpoint"], force_add=True)
    try:
        return run_experiment(cfg, resume_run=resume)
    except Interrupted as err:  # stop the whole sweep, not just this job
        print(
            f"labnet: job {job} [{overrides}] interrupted; run the same command again to resume the sweep "
            "(finished jobs are skipped, interrupted ones resume from their checkpoints)",
            file=sys.stderr,
            flush=True,
        )
        raise KeyboardInterrupt from err
    except LabnetError as err:
        print(f"labnet: job {job} [{overrides}] FAILED: {err}", file=sys.stderr, flush=True)
        mark_failed(job, f"[{overrides}] {err}")
        result = RunResult.read(folder) if (folder / RESULT_FILE).is_file() else None
        if result is None:  # it failed before training (config, data, tracking)
            result = _unrun_result(hc, cfg, "FAILED", str(err))
        result.config_mistake = isinstance(err, ConfigError)  # (a single run would exit with code 2)
        result.write(folder)
        return math.nan


def record_killed_job(folder: str | Path, job: int, overrides: list[str], reason: str) -> None:
    """A job whose process was killed (a joblib worker: SIGKILL, the OOM killer): its journal ended KILLED
    with ``reason`` (the MLflow mirror then ends its run KILLED), its result written, so the sweep's report
    counts it and a re-run resumes it from its checkpoint."""
    folder = Path(folder)
    print(
        f"labnet: job {job} [{' '.join(overrides)}] KILLED: {reason}; the other jobs go on "
        "(run the same command again to resume it)",
        file=sys.stderr,
        flush=True,
    )
    mark_failed(job, f"[{' '.join(overrides)}] {reason}")
    if not end_killed(folder, reason):  # (killed before it started its journal)
        RunResult(status="KILLED", job=job, overrides=list(overrides), error=reason).write(folder)


def end_killed(folder: Path, reason: str) -> bool:
    """The record of a run whose process is gone: its journal ended KILLED with ``reason`` (unless it had
    ended), its result written from the journal. False if it has no journal to go by."""
    if (folder / RESULT_FILE).is_file():
        return True
    end_abandoned(folder, reason)
    result = RunResult.read(folder)
    if result is None:
        return False
    result.write(folder)
    return True


def _unrun_result(hc, cfg: DictConfig, status: str, error: str) -> RunResult:
    """The result of a sweep job that trained nothing: skipped by fail_fast, or failed before training."""
    return RunResult(
        status=status, job=hc.job.num, overrides=list(hc.overrides.task), error=error, params=flatten_config(cfg)
    )


def _apply_replicate_seed(cfg: DictConfig) -> None:
    """Replicate r of a configuration trains with a seed derived from the base seed."""
    replicate = int(OmegaConf.select(cfg, "sweep.replicate", default=0) or 0)
    if replicate:
        OmegaConf.update(cfg, "seed", replicate_seed(cfg.seed, replicate), force_add=True)


def prior_runs() -> dict[str, dict[str, Any]]:
    """Runs already recorded for this sweep's experiment, by config hash (written by the tracker at the
    sweep's start)."""
    sweep_dir = os.environ.get(SWEEP_DIR_ENV)
    if not sweep_dir or not (Path(sweep_dir) / PRIOR_RUNS_FILE).is_file():
        return {}
    return json.loads((Path(sweep_dir) / PRIOR_RUNS_FILE).read_text())


def mark_failed(job: int, reason: str) -> None:
    sweep_dir = os.environ.get(SWEEP_DIR_ENV)
    if sweep_dir:
        marker = Path(sweep_dir) / FAILED_MARKER
        if not marker.exists():
            marker.write_text(f"job {job}: {reason}\n")


def failed_earlier() -> str | None:
    sweep_dir = os.environ.get(SWEEP_DIR_ENV)
    marker = Path(sweep_dir) / FAILED_MARKER if sweep_dir else None
    return marker.read_text().strip() if marker is not None and marker.exists() else None
