"""The fused launcher's units (fused groups and jobs that run alone) spread over worker processes:
``hydra.launcher.n_jobs``.

The workers are the joblib launcher's (``labnet.sweeps.workers``): loky's fresh interpreters with loky's
limits on BLAS threads, each watched on its own (a worker that dies leaves only its own unit's runs KILLED),
all stopped with the command (Ctrl-C, SIGTERM: each ends its members KILLED with their checkpoints). A worker
runs one unit at a time, as the launching process does without workers (``labnet.fused.launch.execute_unit``):
a fused group through ``run_fused``, a job alone through Hydra's ``run_job``; each job's JobReturn goes back to
the sweeper in the jobs' order. The jobs are composed once, in the launching process, and sent composed.

A group's stacks (``hydra.launcher.stacks``, one per core by default) are shared among the workers, and each
stack's BLAS threads are the cores / (stacks x workers): the workers together use the cores, not more.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from labnet.errors import ConfigError
from labnet.run_policy import joblib_count
from labnet.sweeps.workers import Execute


def worker_limit(value: Any) -> int:
    """``hydra.launcher.n_jobs``: the most worker processes at once (1: none, the units run in this process).
    null or a whole number >= 1, or joblib's count from the cores: -1 one per core, -2 all but one, ..."""
    cores = os.cpu_count() or 1
    if value is None:
        return 1
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return value
        if -cores <= value <= -1:
            return joblib_count(value)
    raise ConfigError(
        f"hydra.launcher.n_jobs={value!r}: accepted are null or 1 (one unit after another in this process), "
        f"a whole number of worker processes >= 2, or -1 to -{cores} as joblib counts (-1: one worker per core, "
        f"-2: all cores but one; this machine has {cores} cores)"
    )


@dataclass
class UnitPayload:
    """What a worker is sent for one unit: its composed jobs, how it runs, and its group's stacks."""

    kind: str  # "fused" | "alone"
    jobs: list  # labnet.fused.launch.Job
    stacks: int
    workers: int


def spread_line(units: int, workers: int, stacks: int | None, n_jobs: Any) -> str:
    """The plan's line about the workers (``workers`` already at most ``units``; ``stacks``: the largest fused
    group's, None without one)."""
    if workers <= 1:
        where = "one unit: it runs" if units == 1 else f"{units} units, one after another,"
        return f"labnet:   {where} in this process (hydra.launcher.n_jobs={n_jobs})"
    line = f"labnet:   {units} units on {workers} worker processes (hydra.launcher.n_jobs={n_jobs}), "
    line += "one unit per worker at a time"
    if stacks is None:
        return line
    return line + f"; a fused group trains as {stacks} stack{'s' if stacks != 1 else ''} in its worker"


def run_in_workers(launcher, jobs: Sequence, plan, workers: int, execute: Execute) -> list[JobReturn]:
    """Every unit of ``plan`` on at most ``workers`` worker processes; one JobReturn per job, in job order.
    ``execute`` runs a unit in a worker (``labnet.fused.launch.execute_unit``, the launching process's way)."""
    from hydra.core.singleton import Singleton
    from hydra.types import HydraContext

    from labnet.fused.side_by_side import stack_count
    from labnet.sweeps.workers import Unit, run_units, worker_env

    stacks_value = OmegaConf.select(launcher.config, "hydra.launcher.stacks")
    units = []
    for kind, ids in plan.units:
        stacks = stack_count(stacks_value, len(ids), workers) if kind == "fused" else 1
        payload = UnitPayload(kind, [jobs[i] for i in ids], stacks, workers)
        units.append(Unit(list(ids), [jobs[i].num for i in ids], [jobs[i].overrides for i in ids], payload))
    context = launcher.hydra_context
    loader = getattr(context.config_loader, "_loader", context.config_loader)  # (ComposeOnce: its configs stay)
    shared = (HydraContext(loader, context.callbacks), launcher.config, launcher.task_function, Singleton.get_state())
    returns = run_units(units, workers, execute, shared, worker_env(workers))
    return [returns[i] for i in range(len(jobs))]


@contextlib.contextmanager
def interrupted_once() -> Iterator[None]:
    """SIGINT or SIGTERM raise KeyboardInterrupt once; later ones are ignored (the worker then ends).

    Ctrl-C reaches the whole process group, and the launching process then stops its workers with a SIGINT
    of its own: that second signal must not cut short the members' ending (journal, result, MLflow)."""

    hit = []

    def interrupt(signum, frame) -> None:
        hit.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if not hit:  # (interrupted: the worker ends, still deaf to the launching process's own SIGINT)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
