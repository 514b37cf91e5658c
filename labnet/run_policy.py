"""Where a run stands among others and what that means for it: Hydra's run mode, the BLAS threads it may
use, whether its evaluation gets a core of its own, and which plugins it loads."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labnet.config import check_whole
from labnet.errors import ConfigError
from labnet.per_launch import once_per_launch
from labnet.plugins import get_plugin_manager
from labnet.train.trainer import TrainerConfig

TRAINER_ONLY_KEYS = ("resume", "resume_allow_changes", "dtype", "threads")


def hydra_runtime() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def in_multirun() -> bool:
    hc = hydra_runtime()
    return hc is not None and str(hc.mode) == "RunMode.MULTIRUN"


def _ray_cpus() -> int | None:
    """The CPUs the Ray task running this job reserved (None outside a Ray sweep)."""
    hc = hydra_runtime()
    if hc is None or not in_multirun():
        return None
    cpus = OmegaConf.select(hc, "launcher.ray.remote.num_cpus", default=None)
    return int(cpus) if cpus else None


def parallel_jobs() -> int:
    """Jobs running at once on this machine: the joblib launcher's ``n_jobs`` (-1 all cores, -2 all but
    one, as joblib counts), else 1."""
    hc = hydra_runtime()
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=None) if hc is not None and in_multirun() else None
    if not n_jobs:
        return 1
    return joblib_count(int(n_jobs))


def joblib_count(n_jobs: int) -> int:
    """Processes for joblib's ``n_jobs``: itself when positive, else counted from the cores (-1 every core, -2
    all but one, ...), at least one."""
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
    return once_per_launch("plugins", tuple(sorted(set(block))), lambda: get_plugin_manager(block=block))


class limited_threads:
    """At most ``limit`` BLAS threads inside the block (threadpoolctl)."""

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
