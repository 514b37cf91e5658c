"""The fused launcher's work (``hydra/launcher=labnet_fused``): compose every job of a sweep, train the jobs that
fuse as one stacked model in this process (labnet.fused.members), and run every other job as Hydra's basic
launcher does (Hydra's ``run_job`` and labnet's task: skip, resume, fail_fast as usual).

A job runs alone when a job of the same configuration already FINISHED or can resume (labnet's sweep jobs skip
or resume it), when its folder already holds a run, when ``trainer.resume`` is set, when ``sweep.fail_fast``
stopped the sweep, or when it fuses with no other job (:func:`labnet.fused.grouping.why_alone` says why).
"""

from __future__ import annotations

import copy
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from labnet.config import flatten_config
from labnet.errors import LabnetError
from labnet.fused.grouping import fusible_groups, why_alone
from labnet.fused.side_by_side import stack_count
from labnet.fused.workers import UnitPayload, interrupted_once, run_in_workers, spread_line, worker_limit
from labnet.record.journal import JOURNAL_FILE
from labnet.run_policy import plugin_manager_for
from labnet.sweeps.identity import job_hash


@dataclass
class Job:
    """One job of the sweep, composed: Hydra's whole config and labnet's (resolved, without ``hydra``)."""

    num: int
    overrides: list[str]
    config: DictConfig
    cfg: DictConfig
    folder: Path
    flat: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """Fused groups (job indices) and jobs that run alone (index -> why), in the order they run."""

    units: list[tuple[str, list[int]]] = field(default_factory=list)  # ("fused" | "alone", indices)
    why: dict[int, str] = field(default_factory=dict)

    def describe(self, jobs: Sequence[Job]) -> list[str]:
        fused = [ids for kind, ids in self.units if kind == "fused"]
        n_fused = sum(len(ids) for ids in fused)
        lines = [
            f"labnet: fused launcher: {len(jobs)} jobs: {n_fused} in {len(fused)} fused group"
            + ("s" if len(fused) != 1 else "")
            + (f", {len(jobs) - n_fused} alone" if len(jobs) > n_fused else "")
        ]
        for ids in fused:
            lines.append(f"labnet:   fused group of {len(ids)}: jobs {_numbers([jobs[i].num for i in ids])}")
        by_reason: dict[str, list[int]] = {}
        for i, why in sorted(self.why.items()):
            by_reason.setdefault(why, []).append(jobs[i].num)
        for why, nums in by_reason.items():
            lines.append(
                f"labnet:   job {nums[0]} runs alone: {why}"
                if len(nums) == 1
                else f"labnet:   jobs {_numbers(nums)} run alone: {why}"
            )
        return lines


def _numbers(nums: list[int]) -> str:
    return f"{nums[0]}-{nums[-1]}" if nums == list(range(nums[0], nums[-1] + 1)) and len(nums) > 1 else str(nums)


def compose_job(launcher, num: int, overrides: Sequence[str]) -> Job:
    """The job's config as Hydra's basic launcher composes it, with its output folder set as ``run_job`` sets it
    (labnet's part resolved while Hydra's config is the job's, as the task would see it)."""
    from labnet.sweeps.jobs import _apply_replicate_seed

    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(config):
        config.hydra.job.id = num
        config.hydra.job.num = num
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir")), str(config.hydra.sweep.subdir)).absolute()
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(folder)
        HydraConfig.instance().set_config(config)
        cfg = copy.deepcopy(config)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        OmegaConf.resolve(cfg)
    finally:
        HydraConfig.instance().cfg = before
    _apply_replicate_seed(cfg)
    return Job(num, list(overrides), config, cfg, folder)


def reason_to_run_alone(job: Job, prior: dict[str, dict]) -> str | None:
    """Why labnet's single-job path must run this job (None: it may fuse)."""
    sweep = job.cfg.get("sweep") or {}
    if sweep.get("rerun") != "all":
        found = prior.get(job_hash(job.flat, plugin_manager_for(job.cfg)))
    else:
        found = None
    if found and found.get("status") == "FINISHED":
        return "already finished: skipped"
    if found and found.get("status") == "KILLED" and found.get("checkpoint") and Path(found["checkpoint"]).is_file():
        return "killed earlier: resumes from its checkpoint"
    if job.cfg.trainer.get("resume"):
        return "trainer.resume is set: it continues a checkpoint"
    if (job.folder / JOURNAL_FILE).is_file():
        return f"{job.folder} already holds a run"
    return None


def _plugin_key(flat: dict[str, Any]) -> str:
    """What decides a job's plugins: the members of a group share one plugin manager."""
    return repr((flat.get("tracking.name"), flat.get("plugins.block")))


def plan_jobs(jobs: Sequence[Job], prior: dict[str, dict]) -> Plan:
    plan, fresh = Plan(), []
    for i, job in enumerate(jobs):
        why = reason_to_run_alone(job, prior)
        if why is None:
            fresh.append(i)
        else:
            plan.why[i] = why
    flats = [jobs[i].flat for i in fresh]
    groups = []
    for group in fusible_groups(flats):
        by_plugins: dict[str, list[int]] = {}
        for g in group:
            by_plugins.setdefault(_plugin_key(flats[g]), []).append(g)
        groups += list(by_plugins.values())
    for group in groups:
        if len(group) > 1:
            plan.units.append(("fused", [fresh[g] for g in group]))
            continue
        g = group[0]
        why = why_alone(flats, g)
        if why.startswith("it fuses with"):  # (same computation, other tracking or plugins)
            why = "its tracking or plugins (tracking.name, plugins.block) differ from the jobs it would fuse with"
        plan.why[fresh[g]] = why
    alone = [("alone", [i]) for i in plan.why]
    plan.units = sorted(plan.units + alone, key=lambda unit: unit[1][0])
    return plan


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Hydra's ``Launcher.launch`` for ``labnet_fused``: one JobReturn per job, in the order given."""
    from labnet.sweeps.jobs import prior_runs

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    jobs = [compose_job(launcher, initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
    for job in jobs:
        job.flat = flatten_config(job.cfg)
    plan = plan_jobs(jobs, prior_runs())
    n_jobs = OmegaConf.select(launcher.config, "hydra.launcher.n_jobs")
    workers = min(worker_limit(n_jobs), len(plan.units))
    lines = plan.describe(jobs)
    if n_jobs is not None and len(plan.units):
        largest = max((len(ids) for kind, ids in plan.units if kind == "fused"), default=0)
        stacks_value = OmegaConf.select(launcher.config, "hydra.launcher.stacks")
        stacks = stack_count(stacks_value, largest, workers) if largest else None
        lines.append(spread_line(len(plan.units), workers, stacks, n_jobs))
    print("\n".join(lines), flush=True)
    if workers > 1:
        return run_in_workers(launcher, jobs, plan, workers, execute_unit)
    returns: list[JobReturn | None] = [None] * len(jobs)
    for kind, ids in plan.units:
        if kind == "fused" and not stopped_by_fail_fast(jobs[ids[0]]):
            for i, ret in zip(ids, run_fused(launcher, [jobs[i] for i in ids]), strict=True):
                returns[i] = ret
        else:
            for i in ids:
                returns[i] = run_alone(launcher, jobs[i])
    return returns


def execute_unit(num: int, unit: UnitPayload, hydra_context, config, task, singleton_state) -> list[JobReturn]:
    """A worker's run of one unit (``labnet.sweeps.workers.Execute``), as :func:`launch` runs it in the
    launching process; ``task`` (``labnet.sweeps.workers.Task``) tells the launching process where its runs are."""
    from types import SimpleNamespace

    from hydra.core.singleton import Singleton

    from labnet.per_launch import launch_scope

    setup_globals()
    Singleton.set_state(singleton_state)
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    launcher = SimpleNamespace(config=config, hydra_context=hydra_context, task_function=task)
    with launch_scope(), interrupted_once():
        if unit.kind == "fused" and not stopped_by_fail_fast(unit.jobs[0]):
            task.started([str(job.folder) for job in unit.jobs])
            return run_fused(launcher, unit.jobs, stacks=unit.stacks, workers=unit.workers)
        return [run_alone(launcher, job) for job in unit.jobs]


def stopped_by_fail_fast(job: Job) -> bool:
    from labnet.sweeps.jobs import failed_earlier

    return bool((job.cfg.get("sweep") or {}).get("fail_fast")) and failed_earlier() is not None


def run_alone(launcher, job: Job) -> JobReturn:
    """The job as Hydra's basic launcher runs it."""
    ret = run_job(
        hydra_context=launcher.hydra_context,
        task_function=launcher.task_function,
        config=job.config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    return ret


def run_fused(launcher, jobs: Sequence[Job], stacks: int | None = None, workers: int = 1) -> list[JobReturn]:
    """Train ``jobs`` as one fused group; each member's JobReturn holds its objective (NaN when it failed).
    ``stacks``: as many stacks side by side (None: ``hydra.launcher.stacks``); ``workers``: the worker
    processes training at once, which share the cores (labnet.fused.workers).

    A group that cannot be built (a config or data mistake) runs its jobs one by one instead, so each gets
    the single run's error handling and report."""
    from labnet.fused.members import Member, train_members
    from labnet.sweeps.jobs import mark_failed

    if stacks is None:
        stacks = stack_count(OmegaConf.select(launcher.config, "hydra.launcher.stacks"), len(jobs))
    callbacks = launcher.hydra_context.callbacks
    for job in jobs:
        job.folder.mkdir(parents=True, exist_ok=True)
        if job.config.hydra.output_subdir is not None:
            _save_hydra_files(job)
        callbacks.on_job_start(config=job.config, task_function=launcher.task_function)
    returns = [_job_return(job) for job in jobs]
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(jobs[0].config)  # (a multirun's job, as run_job sets it for the task)
    try:
        outcomes = train_members([Member(job.cfg, job.config.hydra) for job in jobs], stacks=stacks, workers=workers)
    except KeyboardInterrupt:
        print(
            "labnet: fused group interrupted; run the same command again to resume the sweep (finished jobs are "
            "skipped, interrupted ones resume from their checkpoints)",
            file=sys.stderr,
            flush=True,
        )
        raise
    except LabnetError as err:
        if any((job.folder / JOURNAL_FILE).is_file() for job in jobs):  # the members' runs started: they failed
            outcomes = None
            for job, ret in zip(jobs, returns, strict=True):
                ret.status, ret.return_value = JobStatus.COMPLETED, math.nan
                mark_failed(job.num, f"[{' '.join(job.overrides)}] {err}")
        else:
            print(
                f"labnet: the fused group of jobs {[j.num for j in jobs]} cannot be built ({err}); "
                "running them one by one",
                file=sys.stderr,
                flush=True,
            )
            return [run_alone(launcher, job) for job in jobs]
    except Exception as err:  # as Hydra's run_job records a job's exception (the sweeper raises it)
        outcomes = None
        for ret in returns:
            ret.status, ret.return_value = JobStatus.FAILED, err
    finally:
        HydraConfig.instance().cfg = before
    for job, ret, outcome in zip(jobs, returns, outcomes or [None] * len(jobs), strict=True):
        if outcome is not None:
            ret.status, ret.return_value = JobStatus.COMPLETED, outcome.objective
            if outcome.status != "FINISHED":
                print(
                    f"labnet: job {job.num} [{' '.join(job.overrides)}] {outcome.status}: {outcome.error}",
                    file=sys.stderr,
                    flush=True,
                )
                mark_failed(job.num, f"[{' '.join(job.overrides)}] {outcome.error}")
        callbacks.on_job_end(config=job.config, job_return=ret)
    return returns


def _job_return(job: Job) -> JobReturn:
    hydra_cfg = OmegaConf.create({"hydra": job.config.hydra})  # (create copies the node: no deepcopy first)
    try:
        name = JobRuntime.instance().get("name")
    except KeyError:
        name = None
    return JobReturn(
        overrides=list(job.overrides), cfg=job.cfg, hydra_cfg=hydra_cfg, working_dir=os.getcwd(), task_name=name
    )


def _save_hydra_files(job: Job) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra's ``run_job`` writes them."""
    from hydra.core.utils import _save_config

    folder = job.folder / str(job.config.hydra.output_subdir)
    _save_config(job.cfg, "config.yaml", folder)
    _save_config(OmegaConf.create({"hydra": job.config.hydra}), "hydra.yaml", folder)
    _save_config(job.config.hydra.overrides.task, "overrides.yaml", folder)
