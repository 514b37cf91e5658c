"""The names metrics get in MLflow, chosen for how its UI lays out charts (MLflow 3.x).

MLflow groups a run's charts into sections by the part of a metric's name before its last ``/`` and
orders them: every named section alphabetically, then "Model metrics" (names without ``/``), then
"System metrics" (names under ``system/``, drawn against time, shown on their own tab of a run's page).
Nothing else decides the order (a user's own rearrangement stays in their browser only), so:

- the main metrics (train_*/val_*/test_*, best_*) keep plain names: no named section comes before them;
- the health diagnostics, ``health/<layer>/<what>`` in the run's folder, go under ``system/`` with dots
  (``system/health.layer0_affine.grad_norm``): after the main metrics, on a tab of their own;
- the training loss per optimizer step is ``train_loss_per_step``: MLflow's x axis is always labelled
  "Step", and this is the one metric whose step is an optimizer step, the others' is the epoch.
"""

from __future__ import annotations

HEALTH_PREFIX = "health/"
MLFLOW_HEALTH_PREFIX = "system/health."
STEP_LOSS = "train_loss_per_step"


def mlflow_metric_name(key: str) -> str:
    """The MLflow name of a per-epoch metric as the run's journal names it."""
    if key.startswith(HEALTH_PREFIX):
        return MLFLOW_HEALTH_PREFIX + key[len(HEALTH_PREFIX) :].replace("/", ".")
    return key
