"""The Hydra callback that tells plugins when a multirun starts and ends.

It runs in the launching process, before any job starts, so a tracker can create its store and the
sweep's parent run there (parallel jobs then only attach to it). Jobs find the sweep through
``LABNET_SWEEP_ID`` / ``LABNET_SWEEP_DIR``; each leaves its record in its own folder, and
``labnet_sweep_end`` receives the jobs' results read from there.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from labnet.config import check_flag
from labnet.record.result import RunResult, read_results
from labnet.sweeps.best import closing_lines
from labnet.sweeps.identity import SWEEP_DIR_ENV, SWEEP_ID_ENV

RERUN_CHOICES = ("missing", "all")


@dataclass
class Sweep:
    id: str
    dir: Path
    cfg: DictConfig
    info: dict[str, Any] = field(default_factory=dict)


def sweep_report(results: list[RunResult]) -> str:
    """e.g. "12 jobs: 3 already finished, skipped; 1 resumed from epoch 4; 8 trained; 1 failed"."""
    skipped = [r for r in results if r.skipped]
    resumed = [r for r in results if r.resumed_from_epoch]
    finished = [r for r in results if r.status == "FINISHED" and not r.skipped]
    failed = [r for r in results if r.status == "FAILED"]
    killed = [r for r in results if r.status == "KILLED"]
    not_run = [r for r in results if r.status == "SKIPPED"]
    parts = [f"{len(results)} jobs"]
    if skipped:
        parts.append(f"{len(skipped)} of {len(results)} jobs already finished, skipped")
    parts += [f"1 resumed from epoch {r.resumed_from_epoch}" for r in resumed]
    parts.append(f"{len(finished)} trained")
    if failed:
        parts.append(f"{len(failed)} failed")
    if killed:
        parts.append(f"{len(killed)} killed")
    if not_run:
        parts.append(f"{len(not_run)} not run (fail_fast)")
    return "; ".join(parts)


def check_sweep_options(sweep_cfg: Any) -> None:
    """``sweep.rerun`` and ``sweep.fail_fast``, checked once before any job starts (a typo would run the wrong jobs)."""
    from labnet.errors import ConfigError

    rerun = sweep_cfg.get("rerun", "missing")
    if rerun not in RERUN_CHOICES:
        raise ConfigError(
            f"sweep.rerun={rerun!r}: accepted are missing (skip jobs already FINISHED in the tracking store, "
            "resume KILLED ones) and all (run every job again)"
        )
    check_flag("sweep.fail_fast", sweep_cfg.get("fail_fast", False))


def sweep_failure(results: list[RunResult]) -> Exception | None:
    """Why the sweep's command ends with an error after its jobs (None: it does not): a job was killed (the
    sweep is not complete; exit code 1), or every job failed (exit code 2 when each failed on a config
    mistake, as a single run would, else 1). Some jobs failing among finished ones is a sweep's result."""
    from labnet.errors import ConfigError, LabnetError

    killed = [r for r in results if r.status == "KILLED"]
    if killed:
        which = "; ".join(f"job {r.job} [{' '.join(r.overrides)}]: {r.error}" for r in killed)
        return LabnetError(
            f"{len(killed)} of {len(results)} jobs killed ({which}); run the same command again to resume "
            "them (finished jobs are skipped)"
        )
    failed = [r for r in results if r.status == "FAILED"]
    if not failed or len(failed) < len(results):  # (jobs fail_fast did not run are not failures)
        return None
    errors = list(dict.fromkeys(r.error or "" for r in failed))  # (each message once, in job order)
    if all(r.config_mistake for r in failed):
        return ConfigError(f"every job failed on a config mistake: {'; '.join(errors)}")
    return LabnetError(f"every job failed: {'; '.join(errors)}")


class SweepAborted(BaseException):
    """An error that ends a sweep's command: before any job (a config mistake, a tracking store that cannot
    be reached), or after them all (``sweep_failure``). Hydra turns an ``Exception`` raised in a callback
    into a warning (and launches the jobs anyway), so this carries the ``LabnetError`` past it to
    ``labnet.__main__``, which prints it and exits with its code."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.sweep: Sweep | None = None
        self.manager = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from labnet.errors import LabnetError

        try:
            self._start(config)
        except LabnetError as err:
            raise SweepAborted(err) from err

    def _start(self, config: DictConfig) -> None:
        from labnet.run_policy import plugin_manager_for

        check_sweep_options(config.get("sweep") or {})
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.sweep = Sweep(id=uuid.uuid4().hex[:12], dir=sweep_dir, cfg=config)
        os.environ[SWEEP_ID_ENV], os.environ[SWEEP_DIR_ENV] = self.sweep.id, str(sweep_dir.resolve())
        self.manager = plugin_manager_for(config)
        self.manager.call("labnet_sweep_start", sweep=self.sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep is None:
            return
        results = read_results(self.sweep.dir)
        try:
            self.manager.call("labnet_sweep_end", sweep=self.sweep, results=results)
        finally:
            print(*closing_lines(self.sweep.id, sweep_report(results), results, self.sweep.info), sep="\n")
            os.environ.pop(SWEEP_ID_ENV, None)
            os.environ.pop(SWEEP_DIR_ENV, None)
        failure = sweep_failure(results)
        if failure is not None:
            raise SweepAborted(failure)
