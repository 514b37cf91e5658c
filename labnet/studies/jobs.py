"""One sweep job as a study sees it: what the job records while it trains (:class:`Recorder`, in the
job's own process, into its output folder) and what the study reads back at the sweep's end (:class:`Job`).
The two files' formats have their home here: ``study_steps.csv`` and ``study_points.csv``."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labnet.errors import ConfigError

STEPS_FILE = "study_steps.csv"
POINTS_FILE = "study_points.csv"
#: largest model whose parameters are recorded every epoch for a ``paths`` study
MAX_RECORDED_PARAMS = 64


class Recorder:
    """What one run records for its study."""

    def __init__(self, study: dict[str, Any], model) -> None:
        self.plot = study["plot"]
        self.steps: list[np.ndarray] = []
        self.losses: list[np.ndarray] = []
        self.points: list[np.ndarray] = []
        if self.plot == "paths":
            if model.flat_params.size > MAX_RECORDED_PARAMS:
                raise ConfigError(
                    f"study.plot=paths records the model's parameters every epoch; this model has "
                    f"{model.flat_params.size} (at most {MAX_RECORDED_PARAMS}), e.g. use a `surface` layer"
                )
            self.points.append(model.flat_params.astype(np.float64))

    def epoch_end(self, run, metrics: dict[str, float], model) -> None:
        if self.plot == "train_loss_curves":
            self.steps.append(np.array(run.step_numbers, np.int64))
            self.losses.append(np.array(run.step_losses, np.float64))
        elif self.plot == "paths":
            self.points.append(model.flat_params.astype(np.float64))
        elif self.plot == "train_test_gap":
            from labnet.train.metrics import evaluate

            data, loss = run.data, run.loss
            if data is not None and loss is not None:
                metrics["train_eval_loss"], metrics["train_eval_accuracy"] = evaluate(model, loss, data.train)

    def write(self, output_dir: Path) -> list[Path]:
        output_dir.mkdir(parents=True, exist_ok=True)
        files = []
        if self.steps:
            path = output_dir / STEPS_FILE
            table = np.column_stack([np.concatenate(self.steps), np.concatenate(self.losses)])
            np.savetxt(path, table, fmt=["%d", "%.7g"], delimiter=",", header="step,train_loss", comments="")
            files.append(path)
        if self.points:
            path = output_dir / POINTS_FILE
            points = np.vstack(self.points)
            table = np.column_stack([np.arange(len(points)), points])
            header = "epoch," + ",".join(f"p{i}" for i in range(points.shape[1]))
            np.savetxt(path, table, fmt="%.9g", delimiter=",", header=header, comments="")
            files.append(path)
        return files


@dataclass
class Job:
    """One sweep job as a study sees it: its result.json plus what the studies plugin recorded."""

    result: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    #: (n, 2): global step, training loss of that step
    steps: np.ndarray | None = None
    #: (n, 1 + k): epoch, then the model's k parameters after that epoch (epoch 0: the start)
    points: np.ndarray | None = None

    @property
    def params(self) -> dict[str, Any]:
        return self.result.get("params") or {}

    @property
    def status(self) -> str:
        return str(self.result.get("status") or "?")

    def last(self, metric: str) -> float:
        for entry in reversed(self.history):
            if isinstance(entry.get(metric), (int, float)):
                return float(entry[metric])
        return math.nan

    def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        epochs = np.arange(1, len(self.history) + 1)
        return epochs, np.array([h.get(metric, np.nan) for h in self.history], dtype=float)


def read_table(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.reader(f))[1:]
    return np.array(rows, dtype=float).reshape(len(rows), -1) if rows else None
