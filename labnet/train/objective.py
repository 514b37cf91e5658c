"""The objective rule one run and a fused sweep's members share: best value so far, and early stopping."""

from __future__ import annotations

import math
from typing import Any


def minimizes(metric: str) -> bool:
    """A ``*_loss`` objective is minimised, anything else (accuracies) maximised."""
    return "loss" in metric


def record_objective(run: Any, epoch: int, value: float, patience: int | None) -> None:
    """Update ``run.best_objective`` / ``run.best_epoch`` with this epoch's ``value``; set ``run.stop_reason``
    when ``patience`` epochs passed without improvement."""
    metric = run.objective_metric
    better = (value < run.best_objective) if minimizes(metric) else (value > run.best_objective)
    if math.isnan(run.best_objective) or better:
        run.best_objective, run.best_epoch = value, epoch
    elif patience and epoch - run.best_epoch >= patience:
        run.stop_reason = (
            f"early stopping: {metric} did not improve for {patience} epochs "
            f"(best {run.best_objective:.4f} at epoch {run.best_epoch})"
        )
