"""The Hydra task: composed config -> components -> trainer -> hooks -> objective."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from labnet import sweep
from labnet.build import build_model
from labnet.config import build_component, check_whole, flatten_config
from labnet.config_checks import check_top_level
from labnet.errors import ConfigError, LabnetError
from labnet.plugins import Registry, get_plugin_manager
from labnet.sweep import write_result
from labnet.train.trainer import Interrupted, Run, Trainer, TrainerConfig

log = logging.getLogger("labnet")

TRAINER_ONLY_KEYS = ("resume", "dtype", "threads")


def _hydra_runtime() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def in_multirun() -> bool:
    hc = _hydra_runtime()
    return hc is not None and str(hc.mode) == "RunMode.MULTIRUN"


def default_run_name(cfg: DictConfig) -> str:
    lr = cfg.optimizer.get("lr")
    parts = [cfg.optimizer.name] + ([f"lr{lr:g}"] if isinstance(lr, (int, float)) else []) + [cfg.dataset.name]
    return "-".join(parts)


def _ray_cpus() -> int | None:
    """The CPUs the Ray task running this job reserved (None outside a Ray sweep)."""
    hc = _hydra_runtime()
    if hc is None or not in_multirun():
        return None
    cpus = OmegaConf.select(hc, "launcher.ray.remote.num_cpus", default=None)
    return int(cpus) if cpus else None


def parallel_jobs() -> int:
    """Jobs running at once on this machine: the joblib launcher's ``n_jobs`` (-1 all cores, -2 all but
    one, as joblib counts), else 1."""
    hc = _hydra_runtime()
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=None) if hc is not None and in_multirun() else None
    if not n_jobs:
        return 1
    n_jobs = int(n_jobs)
    return max(1, n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs)


def thread_limit(cfg: DictConfig) -> int:
    """BLAS threads for this run: ``trainer.threads``, else the Ray task's CPUs, else cores / parallel jobs,
    else (a single run) all cores but one."""
    threads = cfg.trainer.get("threads")
    if threads is not None:
        auto = ", or null (cores / parallel jobs in a sweep, the Ray task's CPUs, or all cores but one)"
        return check_whole("trainer.threads", threads, 1, auto)
    ray_cpus = _ray_cpus()
    if ray_cpus:  # a Ray task owns exactly the CPUs it reserved
        return max(1, ray_cpus)
    cores, jobs = os.cpu_count() or 1, parallel_jobs()
    if jobs > 1:
        return max(1, cores // jobs)
    # one core stays free (for MLflow's process, the OS, your editor): OpenBLAS threads that do not own their
    # cores wait for each other, and a 2-thread run beside one busy process took 2-30x longer here
    return max(1, cores - 1)


def eval_background(cfg: DictConfig) -> bool:
    """``trainer.eval_background``; ``auto``: on when the jobs' BLAS threads leave a core free for it (a single
    run on 2+ cores), off for parallel jobs that share the cores and in a Ray task (it owns only its CPUs)."""
    value = cfg.trainer.get("eval_background", "auto")
    if value == "auto":
        return _ray_cpus() is None and (os.cpu_count() or 1) - parallel_jobs() * thread_limit(cfg) >= 1
    if not isinstance(value, bool):
        raise ConfigError(f"trainer.eval_background={value!r}: accepted are auto, true, false")
    return value


def trainer_config(cfg: DictConfig) -> TrainerConfig:
    options = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in TRAINER_ONLY_KEYS}
    valid = set(TrainerConfig.__dataclass_fields__) | set(TRAINER_ONLY_KEYS)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"unknown key trainer.{unknown[0]}; valid keys: {', '.join(sorted(valid))}")
    options["progress"] = bool(options.get("progress", True)) and not in_multirun()
    options["eval_background"] = eval_background(cfg)
    return TrainerConfig(**options)


def plugin_manager_for(cfg: DictConfig):
    """The plugins this config asks for: all but ``plugins.block`` (and the tracker with tracking=none)."""
    block = list(cfg.get("plugins", {}).get("block", []) or [])
    if cfg.tracking.name == "none":
        block.append("mlflow_tracker")
    return get_plugin_manager(block=block)


def run_experiment(cfg: DictConfig, manager=None, resume_run: dict | None = None) -> float:
    """Train one run as configured and return its objective (for Hydra sweepers)."""
    start_time = time.time()  # wall clock, comparable across a sweep's processes (result.json)
    manager = manager or plugin_manager_for(cfg)
    for broken in manager.broken:
        print(
            f"labnet: warning: plugin {broken.plugin!r} ({broken.provider}) failed to import and is "
            f"not loaded: {broken.error}",
            file=sys.stderr,
        )
    registry = Registry(manager)
    hc = _hydra_runtime()
    output_dir = Path(hc.runtime.output_dir) if hc is not None else Path.cwd()
    dtype, rng = _dtype(cfg), _rng(cfg)
    section = lambda name: OmegaConf.to_container(cfg[name], resolve=True)  # noqa: E731

    # what needs no data is checked before plugins start their slow work: a typo starts no MLflow process
    check_top_level(cfg, hc, manager)
    loss = build_component(registry.get("loss", cfg.loss.name), "loss", section("loss"))
    optimizer = build_component(registry.get("optimizer", cfg.optimizer.name), "optimizer", section("optimizer"))
    tconf = trainer_config(cfg)
    dataset = build_component(registry.get("dataset", cfg.dataset.name), "dataset", section("dataset"))
    manager.call("labnet_configure", cfg=cfg)
    data = dataset.load(rng, dtype=dtype)
    model = build_model(section("model"), data, registry, rng, dtype, trainer=tconf)
    run = Run(name=cfg.tracking.get("run_name") or default_run_name(cfg), output_dir=output_dir, cfg=cfg)
    run.info.update(
        dataset=dataset, data=data, loss=loss, optimizer=optimizer, registry=registry, manager=manager, hydra=hc
    )
    trainer = Trainer(
        model,
        loss,
        optimizer,
        data,
        tconf,
        rng,
        hook=_HookRelay(manager),
        checkpoint_path=output_dir / "checkpoint.npz",
    )
    run.info["config_hash"] = sweep.config_hash(flatten_config(cfg))
    run.info["resume_run"] = resume_run
    if cfg.trainer.get("resume"):
        run.info["resumed_from_epoch"] = trainer.resume_from(cfg.trainer.resume)

    manager.call("labnet_run_start", run=run, cfg=cfg, model=model)
    status, error, final = "FAILED", None, {}
    try:
        with _limited_threads(thread_limit(cfg)):
            final = trainer.fit(run)
        status = "FINISHED"
    except Interrupted as err:
        status, error = "KILLED", err
        raise
    except BaseException as err:
        status, error = ("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"), err
        raise
    finally:
        if not final and run.history:
            final = dict(run.history[-1])
        run.info["weights_path"] = _save_weights(model, output_dir)
        try:
            manager.call("labnet_run_end", run=run, status=status, metrics=final, model=model, error=error)
        finally:
            write_result(
                output_dir,
                {
                    "job": hc.job.num if hc is not None and in_multirun() else 0,
                    "overrides": list(hc.overrides.task) if hc is not None else [],
                    "status": status,
                    "error": str(error) if error else None,
                    "objective_metric": run.objective_metric,
                    "objective": run.best_objective,
                    "metrics": final,
                    "params": flatten_config(cfg),
                    "run_id": run.info.get("mlflow_run_id"),
                    "config_hash": run.info["config_hash"],
                    "output_dir": str(output_dir.resolve()),
                    "history": run.history,
                    "resumed_from_epoch": run.info.get("resumed_from_epoch"),
                    "start_time": start_time,
                    "end_time": time.time(),
                },
            )
    summary = "  ".join(
        f"{k}={v:.4f}" for k, v in final.items() if k != "epoch_seconds" and "/" not in k and isinstance(v, float)
    )
    print(
        f"labnet: {run.name} finished after {run.epoch} epochs ({run.step} steps): {summary}"
        + (f"  [{run.stop_reason}]" if run.stop_reason else "")
    )
    return float(run.best_objective)


def _dtype(cfg: DictConfig) -> np.dtype:
    name = cfg.trainer.get("dtype", "float32")
    if name not in ("float32", "float64"):
        raise ConfigError(f"trainer.dtype={name!r}: accepted are float32, float64")
    return np.dtype(name)


def _rng(cfg: DictConfig) -> np.random.Generator:
    return np.random.default_rng(check_whole("seed", cfg.get("seed"), 0))


def _save_weights(model, output_dir: Path) -> Path:
    from labnet.train.checkpoint import save_npz

    return save_npz(output_dir / "weights.npz", model.state_dict())


class _HookRelay:
    """What the trainer calls hooks through: names the plugin when one raises."""

    def __init__(self, manager) -> None:
        self.manager = manager

    def labnet_epoch_end(self, **kwargs):
        return self.manager.call("labnet_epoch_end", **kwargs)


class _limited_threads:
    def __init__(self, limit: int | None) -> None:
        self.limit, self.ctx = limit, None

    def __enter__(self):
        if self.limit:
            from threadpoolctl import threadpool_limits

            self.ctx = threadpool_limits(limits=self.limit)
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.unregister()
        return False


def task(cfg: DictConfig) -> float:
    """The Hydra task function. In a sweep: a job already FINISHED in the tracking store is skipped,
    a KILLED one resumes from its checkpoint, and a failing job is reported at once while the sweep goes on."""
    if not in_multirun():
        return run_experiment(cfg)
    hc = _hydra_runtime()
    job, overrides = hc.job.num, " ".join(hc.overrides.task)
    output_dir = Path(hc.runtime.output_dir)
    sweep_cfg = cfg.get("sweep") or {}
    _apply_replicate_seed(cfg)
    if sweep_cfg.get("fail_fast") and (earlier := sweep.failed_earlier()):
        print(f"labnet: job {job} [{overrides}] not run: sweep.fail_fast after {earlier}", file=sys.stderr, flush=True)
        write_result(output_dir, _unrun_result(hc, cfg, "SKIPPED", f"fail_fast after {earlier}"))
        return math.nan
    prior = sweep.prior_runs().get(sweep.config_hash(flatten_config(cfg))) if sweep_cfg.get("rerun") != "all" else None
    if prior and prior.get("status") == "FINISHED":
        print(f"labnet: job {job} [{overrides}] already finished (run {prior['run_id']}), skipped", flush=True)
        write_result(
            output_dir,
            {
                "job": job,
                "overrides": list(hc.overrides.task),
                "status": "FINISHED",
                "skipped": True,
                "objective": prior.get("objective"),
                "objective_metric": prior.get("objective_metric"),
                "run_id": prior["run_id"],
                "metrics": prior.get("metrics", {}),
                "params": flatten_config(cfg),
            },
        )
        return float(prior.get("objective", math.nan))
    resume = None
    if prior and prior.get("status") == "KILLED" and prior.get("checkpoint") and Path(prior["checkpoint"]).is_file():
        resume = prior
        OmegaConf.update(cfg, "trainer.resume", prior["checkpoint"], force_add=True)
    try:
        return run_experiment(cfg, resume_run=resume)
    except Interrupted as err:  # stop the whole sweep, not just this job
        print(
            f"labnet: job {job} [{overrides}] {err}; run the same command again to resume the sweep",
            file=sys.stderr,
            flush=True,
        )
        raise KeyboardInterrupt from err
    except LabnetError as err:
        print(f"labnet: job {job} [{overrides}] FAILED: {err}", file=sys.stderr, flush=True)
        sweep.mark_failed(job, f"[{overrides}] {err}")
        if not (output_dir / sweep.RESULT_FILE).is_file():  # it failed before training (config, data, tracking)
            write_result(output_dir, _unrun_result(hc, cfg, "FAILED", str(err)))
        return math.nan


def _unrun_result(hc, cfg: DictConfig, status: str, error: str) -> dict[str, Any]:
    """The result.json of a sweep job that trained nothing: skipped by fail_fast, or failed before training."""
    return {
        "job": hc.job.num,
        "overrides": list(hc.overrides.task),
        "status": status,
        "error": error,
        "objective": math.nan,
        "params": flatten_config(cfg),
    }


def _apply_replicate_seed(cfg: DictConfig) -> None:
    """Replicate r of a configuration trains with a seed derived from the base seed."""
    replicate = int(OmegaConf.select(cfg, "sweep.replicate", default=0) or 0)
    if replicate:
        OmegaConf.update(cfg, "seed", sweep.replicate_seed(cfg.seed, replicate), force_add=True)
