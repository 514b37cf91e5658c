"""Sweeps: the Hydra callback that tells plugins when a multirun starts and ends.

It runs in the launching process, before any job starts, so a tracker can create its
store and the sweep's parent run there (parallel jobs then only attach to it). Jobs
find the sweep through ``LABNET_SWEEP_ID`` / ``LABNET_SWEEP_DIR`` and each writes a
``result.json`` in its output folder, which ``labnet_sweep_end`` receives as results.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from labnet.config import RUN_INVARIANT_PREFIXES, check_flag

SWEEP_ID_ENV = "LABNET_SWEEP_ID"
SWEEP_DIR_ENV = "LABNET_SWEEP_DIR"
RESULT_FILE = "result.json"


@dataclass
class Sweep:
    id: str
    dir: Path
    cfg: DictConfig
    info: dict[str, Any] = field(default_factory=dict)


def current_sweep_id() -> str | None:
    return os.environ.get(SWEEP_ID_ENV)


def write_result(output_dir: Path, result: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str))


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's result.json under the sweep folder, ordered by job number."""
    results = []
    for path in sweep_dir.glob(f"*/{RESULT_FILE}"):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(results, key=lambda r: r.get("job", 0))


def sweep_report(results: list[dict[str, Any]]) -> str:
    """e.g. "12 jobs: 3 already finished, skipped; 1 resumed from epoch 4; 8 finished; 1 failed"."""
    skipped = [r for r in results if r.get("skipped")]
    resumed = [r for r in results if r.get("resumed_from_epoch")]
    finished = [r for r in results if r.get("status") == "FINISHED" and not r.get("skipped")]
    failed = [r for r in results if r.get("status") == "FAILED"]
    not_run = [r for r in results if r.get("status") == "SKIPPED"]
    parts = [f"{len(results)} jobs"]
    if skipped:
        parts.append(f"{len(skipped)} of {len(results)} jobs already finished, skipped")
    parts += [f"1 resumed from epoch {r['resumed_from_epoch']}" for r in resumed]
    parts.append(f"{len(finished)} trained")
    if failed:
        parts.append(f"{len(failed)} failed")
    if not_run:
        parts.append(f"{len(not_run)} not run (fail_fast)")
    return "; ".join(parts)


RERUN_CHOICES = ("missing", "all")


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


class SweepAborted(BaseException):
    """An error that stops a sweep before any job (a config mistake, a tracking store that cannot be reached).
    Hydra turns an ``Exception`` raised in a callback into a warning and launches the jobs anyway, so this
    carries the ``LabnetError`` past it to ``labnet.__main__``."""

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
        from labnet.app import plugin_manager_for

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
            print(f"labnet: sweep {self.sweep.id}: {sweep_report(results)}")
            os.environ.pop(SWEEP_ID_ENV, None)
            os.environ.pop(SWEEP_DIR_ENV, None)


# -- what makes two jobs "the same" -------------------------------------------------------------

HASH_EXCLUDED_PREFIXES = RUN_INVARIANT_PREFIXES


def config_hash(flat: dict[str, Any]) -> str:
    """A stable hash of a job's resolved, flattened config (what it computes, not how it is tracked)."""
    import hashlib

    kept = {k: v for k, v in flat.items() if not k.startswith(HASH_EXCLUDED_PREFIXES)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def replicate_seed(base_seed: int, replicate: int) -> int:
    """Replicate 0 keeps the base seed; others get independent seeds derived from it."""
    if replicate == 0:
        return int(base_seed)
    import numpy as np

    return int(np.random.SeedSequence([int(base_seed), int(replicate)]).generate_state(1)[0])


def expand_replicates(argv: list[str]) -> list[str]:
    """``-m ... sweep.replicates=N`` -> add ``sweep.replicate=range(0,N)`` so Hydra runs N jobs per configuration."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    for arg in argv:
        if arg.startswith("sweep.replicates="):
            value = arg.split("=", 1)[1]
            if not value.isdigit() or int(value) < 1:
                from labnet.errors import ConfigError

                raise ConfigError(f"sweep.replicates={value!r}: must be a whole number >= 1")
            if multirun and int(value) > 1 and not any(a.startswith("sweep.replicate=") for a in argv):
                return [*argv, f"sweep.replicate=range(0,{int(value)})"]
    return argv


# -- skipping and resuming ----------------------------------------------------------------------

PRIOR_RUNS_FILE = "prior_runs.json"
FAILED_MARKER = "FAILED_JOB"


def prior_runs() -> dict[str, dict[str, Any]]:
    """Runs the tracking store already holds for this sweep's experiment, by config hash."""
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
