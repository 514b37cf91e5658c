"""A fused group's members as runs like any other: each its own folder, journal, hooks, checkpoint, weights,
result and MLflow run, written by labnet.runner's own functions (``start_record``, ``journal_epoch``, ``end_run``).

What differs from a single run is only that the members train together (labnet.fused.group): a member that
diverges, whose hook fails or that stops early does so alone; Ctrl-C ends every member still training KILLED
(each keeps its last epoch's checkpoint, which the same sweep command resumes as a single run).
"""

from __future__ import annotations

import math
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from labnet.config import flatten_config
from labnet.errors import TrainingError
from labnet.fused.group import FusedGroup
from labnet.record.files import stamp
from labnet.record.journal import Journal
from labnet.run_policy import limited_threads, plugin_manager_for, thread_limit
from labnet.runner import _is_interrupt, end_run, finished_line, journal_epoch, log_every, start_record
from labnet.sweeps.identity import job_hash
from labnet.train.checkpoint import encode_json


@dataclass
class Member:
    """One job of a fused group: its labnet config and its Hydra node (``runtime.output_dir`` set)."""

    cfg: DictConfig
    hydra: DictConfig


@dataclass
class Outcome:
    """How a member's run ended, for the launcher's JobReturn and the sweep's fail_fast."""

    status: str
    objective: float
    error: BaseException | None = None


def train_members(members: Sequence[Member], manager=None, stacks: int = 1, workers: int = 1) -> list[Outcome]:
    """Build the members' fused group, train it and record every member as its own run; one outcome each.
    ``stacks``: the group trains as that many stacks side by side, one thread each (labnet.fused.side_by_side);
    ``workers``: worker processes training at once on this machine (labnet.fused.workers), sharing its cores.

    A ``LabnetError`` raised before any member's journal starts (the group cannot be built: a config or data
    mistake) propagates, and nothing is written: the launcher then runs the jobs one by one, as single runs.
    """
    start_time = stamp()
    cfgs = [m.cfg for m in members]
    manager = manager or plugin_manager_for(cfgs[0])
    manager.call("labnet_configure", cfg=cfgs[0])  # (once per group: the tracker starts its syncer here)
    group = FusedGroup(cfgs, manager, [Path(m.hydra.runtime.output_dir) for m in members], stacks=stacks)
    params = [flatten_config(cfg) for cfg in cfgs]
    for j, run in enumerate(group.runs):
        run.data, run.dataset, run.loss = group.data[j], group.dataset, group.losses[j]
        run.optimizer, run.model, run.registry = group.optimizers[j], group.models[j], group.registry
        run.manager, run.hydra = manager, members[j].hydra
        run.run_key, run.config_hash = uuid.uuid4().hex, job_hash(params[j], manager)
        run.info["resume_run"] = None
    opened = []
    try:
        for j, run in enumerate(group.runs):
            run.journal = Journal(run.output_dir)
            opened.append(j)
            run.journal.append("start", **start_record(run, cfgs[j], params[j], run.hydra, None, start_time))
        for j, run in enumerate(group.runs):
            try:
                manager.call("labnet_run_start", run=run, cfg=cfgs[j], model=group.models[j])
            except Exception as err:  # this member fails before training; the others train
                group.fail(j, err)
        every = [log_every(cfg) for cfg in cfgs]

        def on_epoch_end(j: int, run, epoch: int, metrics: dict[str, float]) -> None:
            optimizer = group.optimizers[j]  # (the member's own: its settings; its state is kept in the stack)
            optimizer.step_count = run.step
            manager.call(
                "labnet_epoch_end",
                run=run,
                epoch=epoch,
                metrics=metrics,
                model=group.member_model(j),
                optimizer=optimizer,
            )
            journal_epoch(run, epoch, metrics, every[j])

        meta = [
            {"params": encode_json(p), "run_key": np.asarray(r.run_key)}
            for p, r in zip(params, group.runs, strict=True)
        ]
        with limited_threads(stack_threads(cfgs[0], stacks, workers)):
            finals = group.fit(on_epoch_end, checkpoint_meta=meta)
    except BaseException as err:  # the whole group stops (Ctrl-C, a bug): every member ends as a single run would
        status = "KILLED" if _is_interrupt(err) else "FAILED"
        for j in opened:
            run = group.runs[j]
            try:
                end_run(run, manager, _member_model(group, j), status, err, {}, start_time)
            except Exception as end_error:  # (the first error is the one to report)
                print(f"labnet: warning: ending {run.output_dir} failed too: {end_error}", file=sys.stderr)
        raise
    return [_end_member(group, j, manager, finals[j], start_time) for j in range(len(cfgs))]


def stack_threads(cfg: DictConfig, stacks: int, workers: int = 1) -> int:
    """BLAS threads per stack: ``trainer.threads``, else a single job's (all cores but one) for one stack in
    the launching process, else the cores shared among the stacks of every worker (as joblib's workers share
    them)."""
    if (stacks == 1 and workers == 1) or cfg.trainer.get("threads") is not None:
        return thread_limit(cfg)
    return max(1, (os.cpu_count() or 1) // (stacks * workers))


def _member_model(group: FusedGroup, j: int):
    """Member j's model with the state its run keeps (for a failed member: as it was before it failed)."""
    model = group.models[j]
    try:
        model.load_state_dict(group.member_state(j)["model"])
    except Exception:  # (ending a group that failed before training: the model as built)
        pass
    return model


def _end_member(group: FusedGroup, j: int, manager, final: dict, start_time: float) -> Outcome:
    """Weights, end hooks, journal end and result.json of member j, as ``labnet.runner.end_run`` writes them."""
    run = group.runs[j]
    status, message = group.status(j)
    error = group.exception(j) or (TrainingError(message) if message else None)
    try:
        status, error, final = end_run(run, manager, _member_model(group, j), status, error, final, start_time)
    except Exception as err:  # a plugin failing in labnet_run_end: end_run recorded the run FAILED
        status, error = "FAILED", err
    if status == "FINISHED":
        print(finished_line(run, final), flush=True)
        return Outcome(status, float(run.best_objective))
    return Outcome(status, math.nan, error)
