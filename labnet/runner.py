"""One run: config -> components -> trainer -> hooks -> journal and result record.

The run's folder is its truth: the journal there says what happened as it happens (flushed every
epoch), the checkpoint, weights and result are whole files or absent, and however the run ends
(normally, an exception, Ctrl-C twice, SIGTERM, a plugin failing in ``labnet_run_end``) the journal
says how, before the process lets go of it. MLflow mirrors the journal (``labnet.tracking``).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from labnet import __version__
from labnet.build import build_model
from labnet.config import build_component, check_whole, flatten_config
from labnet.config_checks import check_top_level
from labnet.errors import ConfigError
from labnet.plugins import Registry, code_versions
from labnet.record.files import RecordError, stamp
from labnet.record.journal import JOURNAL_FILE, Journal, epoch_history, last_epoch, read_state
from labnet.record.result import RunResult
from labnet.run_policy import (
    hydra_runtime,
    in_multirun,
    limited_threads,
    plugin_manager_for,
    thread_limit,
    trainer_config,
)
from labnet.sweeps.identity import config_hash
from labnet.train.checkpoint import decode_json, encode_json, load_checkpoint, save_npz
from labnet.train.trainer import Run, Trainer

#: config keys a checkpoint must agree with to be resumed: what the saved weights and optimizer state mean
RESUME_MUST_MATCH = ("model.", "optimizer.", "dataset.", "loss.", "seed", "trainer.batch_size", "trainer.dtype")


def default_run_name(cfg: DictConfig) -> str:
    lr = cfg.optimizer.get("lr")
    parts = [cfg.optimizer.name] + ([f"lr{lr:g}"] if isinstance(lr, (int, float)) else []) + [cfg.dataset.name]
    return "-".join(parts)


def run_experiment(cfg: DictConfig, manager=None, resume_run: dict | None = None) -> float:
    """Train one run as configured and return its objective (for Hydra sweepers)."""
    start_time = stamp()  # wall clock, comparable across a sweep's processes
    manager = manager or plugin_manager_for(cfg)
    for broken in manager.broken:
        print(
            f"labnet: warning: plugin {broken.plugin!r} ({broken.provider}) failed to import and is "
            f"not loaded: {broken.error}",
            file=sys.stderr,
        )
    registry = Registry(manager)
    hc = hydra_runtime()
    folder = Path(hc.runtime.output_dir) if hc is not None else Path.cwd()
    dtype, rng = _dtype(cfg), _rng(cfg)
    section = lambda name: OmegaConf.to_container(cfg[name], resolve=True)  # noqa: E731

    # what needs no data is checked before plugins start their slow work: a typo starts no MLflow process
    check_top_level(cfg, hc, manager)
    loss = build_component(registry.get("loss", cfg.loss.name), "loss", section("loss"))
    optimizer = build_component(registry.get("optimizer", cfg.optimizer.name), "optimizer", section("optimizer"))
    tconf = trainer_config(cfg)
    dataset = build_component(registry.get("dataset", cfg.dataset.name), "dataset", section("dataset"))
    params = flatten_config(cfg)
    resume = ResumePoint.check(cfg, params, folder) if cfg.trainer.get("resume") else None
    manager.call("labnet_configure", cfg=cfg)
    data = dataset.load(rng, dtype=dtype)
    model = build_model(section("model"), data, registry, rng, dtype, trainer=tconf)
    run = Run(
        name=cfg.tracking.get("run_name") or default_run_name(cfg),
        output_dir=folder,
        cfg=cfg,
        data=data,
        dataset=dataset,
        loss=loss,
        optimizer=optimizer,
        model=model,
        registry=registry,
        manager=manager,
        hydra=hc,
        run_key=resume.run_key if resume else uuid.uuid4().hex,
        config_hash=config_hash(params, code_versions(manager)),
    )
    run.info["resume_run"] = resume_run
    trainer = Trainer(
        model,
        loss,
        optimizer,
        data,
        tconf,
        rng,
        hook=_HookRelay(manager, log_every=log_every(cfg)),
        checkpoint_path=folder / "checkpoint.npz",
    )
    trainer.checkpoint_meta = {"params": encode_json(params), "run_key": np.asarray(run.run_key)}
    if resume is not None:
        run.resumed_from_epoch = trainer.resume_from(resume.checkpoint, resume.state)  # (read once, by the check)
        run.history = epoch_history(resume.folder, until_epoch=resume.completed_epoch)
        run.info["journaled_epochs"] = last_epoch(resume.folder)
    if (folder / JOURNAL_FILE).is_file() and (resume is None or resume.folder != folder.resolve()):
        raise RecordError(
            f"{folder} already holds a run (its journal.jsonl); give this run a folder of its own "
            f"(leave hydra.run.dir at its default), or continue that run with: labnet resume {folder}"
        )
    run.journal = Journal(folder)
    run.journal.append("start", **start_record(run, cfg, params, hc, resume, start_time))

    status, error, final = "FAILED", None, {}
    try:
        manager.call("labnet_run_start", run=run, cfg=cfg, model=model)
        with limited_threads(thread_limit(cfg)):
            final = trainer.fit(run)
        status = "FINISHED"
    except BaseException as err:
        status, error = ("KILLED" if _is_interrupt(err) else "FAILED"), err
        raise
    finally:
        status, error, final = end_run(run, manager, model, status, error, final, start_time)
    print(finished_line(run, final))
    return float(run.best_objective)


def finished_line(run: Run, final: dict) -> str:
    """The line a run prints when it ends: its name, length and final figures."""
    summary = "  ".join(
        f"{k}={v:.4f}" for k, v in final.items() if k != "epoch_seconds" and "/" not in k and isinstance(v, float)
    )
    return f"labnet: {run.name} finished after {run.epoch} epochs ({run.step} steps): {summary}" + (
        f"  [{run.stop_reason}]" if run.stop_reason else ""
    )


def end_run(run: Run, manager, model, status: str, error, final: dict, start_time: float):
    """Weights, the end hooks, the journal's end and the result record, in that order, whatever happens."""
    folder, journal = run.output_dir, run.journal
    if not final and run.history:
        final = dict(run.history[-1])
    hook_error = None
    try:
        weights = save_npz(folder / "weights.npz", model.state_dict())
        run.info["weights_path"] = weights
        journal.append("artifact", path=weights.name, dest=None)
        manager.call("labnet_run_end", run=run, status=status, metrics=final, model=model, error=error)
    except BaseException as err:  # a plugin failing at the end fails a run that trained well
        hook_error = err
        if status == "FINISHED":
            status, error = "FAILED", err
    logged = run.history[-1] if run.history else {}
    extra = {k: v for k, v in final.items() if k.startswith(("test_", "best_")) and k not in logged}
    try:
        if extra:
            journal.append("final", epoch=run.epoch, metrics=extra)
        journal.append("end", status=status, error=str(error) if error else None)
    finally:
        journal.close()
    hc = run.hydra
    RunResult(
        status=status,
        job=hc.job.num if hc is not None and in_multirun() else 0,
        overrides=list(hc.overrides.task) if hc is not None else [],
        error=str(error) if error else None,
        objective_metric=run.objective_metric,
        objective=run.best_objective,
        metrics=final,
        params=flatten_config(run.cfg),
        run_key=run.run_key,
        config_hash=run.config_hash,
        output_dir=str(folder.resolve()),
        history=run.history,
        resumed_from_epoch=run.resumed_from_epoch,
        start_time=start_time,
        end_time=stamp(),
    ).write(folder)
    for after in run.info.get("after_end", []):  # e.g. the tracker waiting for MLflow (tracking.sync=wait)
        try:
            after()
        except Exception as err:
            if error is None:
                raise
            print(f"labnet: warning: {err}", file=sys.stderr)  # (the error that ended the run is the one to see)
    if hook_error is not None and error is hook_error:
        raise hook_error
    return status, error, final


def _is_interrupt(err: BaseException) -> bool:
    from labnet.train.trainer import Interrupted

    return isinstance(err, (KeyboardInterrupt, Interrupted))


def start_record(run: Run, cfg, params, hc, resume: ResumePoint | None, start_time: float) -> dict[str, Any]:
    """The journal's ``start`` record of a run (also each member of a fused group: labnet.fused.members)."""
    from labnet.sweeps.identity import current_sweep_id

    plugins = ", ".join(run.manager.distributions())
    tags = {
        "labnet.version": __version__,
        "labnet.objective": cfg.trainer.get("objective", "val_accuracy"),
        "labnet.plugins": plugins,
        "labnet.output_dir": str(run.output_dir.resolve()),
        "labnet.config_hash": run.config_hash,
        "labnet.params_hash": config_hash(params),
        "labnet.code_versions": json.dumps(code_versions(run.manager)),
    }
    overrides = list(hc.overrides.task) if hc is not None else []
    if hc is not None:
        tags["labnet.overrides"] = " ".join(overrides)
    if current_sweep_id():
        tags["labnet.sweep_id"] = current_sweep_id()
        if hc is not None:
            tags["labnet.job"] = str(hc.job.num)
    if resume is not None and resume.changes:
        tags["labnet.resume_changes"] = "; ".join(resume.changes)
    return {
        "time": start_time,
        "run_key": run.run_key,
        "pid": os.getpid(),
        "name": run.name,
        "params": params,
        "params_logged": {**params, "labnet.plugins": plugins},
        "tags": tags,
        "objective": tags["labnet.objective"],
        "job": hc.job.num if hc is not None and in_multirun() else 0,
        "overrides": overrides,
        "config_dir": _config_dir(hc),
        "resume_of": str(resume.folder.resolve()) if resume and resume.folder != run.output_dir else None,
        "resumed_from_epoch": run.resumed_from_epoch,
    }


def _config_dir(hc) -> str | None:
    """The ``--config-dir`` a run was started with (a resume needs it to find the same experiment)."""
    if hc is None:
        return None
    for source in hc.runtime.get("config_sources", []) or []:
        if source.get("provider") == "command-line":
            return str(source.get("path"))
    return None


class ResumePoint:
    """A checkpoint to resume from, checked against the config before anything is loaded."""

    def __init__(self, checkpoint: Path, state, folder: Path, run_key: str, completed_epoch: int, changes: list[str]):
        self.checkpoint, self.state, self.folder, self.run_key = checkpoint, state, folder, run_key
        self.completed_epoch, self.changes = completed_epoch, changes

    @classmethod
    def check(cls, cfg: DictConfig, params: dict[str, Any], folder: Path) -> ResumePoint:
        path = Path(cfg.trainer.resume)
        state = load_checkpoint(path)
        saved = decode_json(state["params"]) if "params" in state else None
        changes = []
        if saved is not None:
            keys = sorted(k for k in set(saved) | set(params) if k.startswith(RESUME_MUST_MATCH))
            changes = [f"{k}: {saved.get(k)!r} -> {params.get(k)!r}" for k in keys if saved.get(k) != params.get(k)]
        if changes and not cfg.trainer.get("resume_allow_changes", False):
            raise ConfigError(
                f"trainer.resume={path} was saved by a run configured differently: {'; '.join(changes)}. "
                "Resume with the run's own config (labnet resume FOLDER reads it from the run's folder), or "
                "set trainer.resume_allow_changes=true to continue it with the new values on purpose "
                "(recorded as the tag labnet.resume_changes)"
            )
        origin = path.resolve().parent
        run_key = str(state["run_key"]) if "run_key" in state else read_state(origin).start.get("run_key")
        completed = int(state["epoch"]) - (1 if state["order"].size else 0)
        if (folder / JOURNAL_FILE).is_file() and origin != folder.resolve():
            raise RecordError(f"{folder} already holds another run's journal; resume into a folder of its own")
        return cls(path, state, origin, run_key or uuid.uuid4().hex, completed, changes)


def _dtype(cfg: DictConfig) -> np.dtype:
    name = cfg.trainer.get("dtype", "float32")
    if name not in ("float32", "float64"):
        raise ConfigError(f"trainer.dtype={name!r}: accepted are float32, float64")
    return np.dtype(name)


def _rng(cfg: DictConfig) -> np.random.Generator:
    return np.random.default_rng(check_whole("seed", cfg.get("seed"), 0))


def log_every(cfg: DictConfig) -> int:
    """``tracking.log_every``: the training loss is journaled every that many steps (0: never)."""
    return int(cfg.tracking.get("log_every", 50) or 0) if "tracking" in cfg else 50


def journal_epoch(run: Run, epoch: int, metrics: dict, log_every: int) -> None:
    """The epoch into the run's journal, with the real time and the training loss every ``log_every`` steps
    (a resumed run's epochs already journaled are not written twice)."""
    if run.journal is None or epoch <= run.info.get("journaled_epochs", 0):
        return
    now = stamp()
    steps, losses = run.step_numbers, run.step_losses
    points = []
    if log_every and len(steps):
        seconds = float(metrics.get("epoch_seconds") or 0.0)
        keep = np.flatnonzero(steps % log_every == 0)
        times = now - seconds + seconds * (keep + 1) / len(steps)
        points = [[int(steps[i]), float(losses[i]), int(t * 1000)] for i, t in zip(keep, times, strict=True)]
    run.journal.append("epoch", time=now, epoch=epoch, step=run.step, metrics=dict(metrics), steps=points)


class _HookRelay:
    """What the trainer calls at each epoch's end: the plugins' hooks (naming the plugin when one raises),
    then the epoch into the run's journal."""

    def __init__(self, manager, log_every: int = 0) -> None:
        self.manager, self.log_every = manager, log_every

    def labnet_checkpoint(self, run):
        return self.manager.call("labnet_checkpoint", run=run)

    def labnet_resume(self, run, state):
        return self.manager.call("labnet_resume", run=run, state=state)

    def labnet_epoch_end(self, **kwargs):
        result = self.manager.call("labnet_epoch_end", **kwargs)
        journal_epoch(kwargs["run"], kwargs["epoch"], kwargs["metrics"], self.log_every)
        return result
