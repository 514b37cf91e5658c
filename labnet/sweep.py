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


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.sweep: Sweep | None = None
        self.manager = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from labnet.app import plugin_manager_for

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
            failed = [r for r in results if r.get("status") != "FINISHED"]
            print(
                f"labnet: sweep {self.sweep.id}: {len(results) - len(failed)} of {len(results)} jobs finished"
                + (f", {len(failed)} failed" if failed else "")
            )
            os.environ.pop(SWEEP_ID_ENV, None)
            os.environ.pop(SWEEP_DIR_ENV, None)
