"""The rules of a compared run's row, one home for every table of runs: `labnet compare`, a sweep's
``summary.csv`` and description, and ``labnet.sweep(...).table``.

A run comes in as a record (a plain dict: run name, status, times in ms, params as stored, metrics,
tags), whether it was read from the tracking store or from a run's folder (:func:`result_record`). Its
row holds the params that vary between the runs, the objective (``best_<labnet.objective>``), the main
metrics' final values, status and duration; rows sort best first by the objective's direction.
"""

from __future__ import annotations

import math
from typing import Any

from labnet.config import RUN_INVARIANT_PREFIXES
from labnet.sweeps.best import objective_value
from labnet.train.objective import minimizes

#: final values of these metrics are shown for every run (test_accuracy only when some run has it)
MAIN_METRICS = ("val_accuracy", "test_accuracy", "train_loss")
IGNORED_PARAM_PREFIXES = RUN_INVARIANT_PREFIXES
#: params that make replicates of one configuration (``sweep.replicates=N``): runs differing only in these
#: are one configuration's, summarised by their mean and spread
REPLICATE_KEYS = ("seed", "sweep.replicate")


def result_record(result: Any, name: str | None = None) -> dict[str, Any]:
    """A run's result (a :class:`labnet.record.result.RunResult`, or its dict) as a record: jobs read from
    their folders give the same rows as their MLflow runs. ``name``: the run's name, else ``job N``."""
    objective = result.get("objective_metric") or "val_accuracy"
    return {
        "run_id": result.get("run_id"),
        "run_name": name or f"job {result.get('job')}",
        "status": result.get("status"),
        "start_time": _ms(result.get("start_time")),
        "end_time": _ms(result.get("end_time")),
        "params": dict(result.get("params") or {}),
        "metrics": {**(result.get("metrics") or {}), f"best_{objective}": result.get("objective")},
        "tags": {"labnet.objective": objective, "labnet.error": result.get("error")},
        "job": result.get("job"),
    }


def _ms(seconds: Any) -> int | None:
    ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
    return int(seconds * 1000) if ok and seconds else None


def varying_params(records: list[dict[str, Any]], all_params: bool = False) -> list[str]:
    """Params with more than one value among the runs that have them, sorted by name.

    A param only some runs have (``optimizer.beta1`` exists for adam, not for sgd) varies only if those
    runs disagree on it; bookkeeping params (``tracking.*``, ``trainer.threads``, ...) are left out unless
    ``all_params``.
    """
    values: dict[str, set[str]] = {}
    for record in records:
        for key, value in record.get("params", {}).items():
            values.setdefault(key, set()).add(str(value))
    keys = sorted(k for k, v in values.items() if len(v) > 1)
    if not all_params:
        keys = [k for k in keys if not k.startswith(IGNORED_PARAM_PREFIXES)]
    return keys


def objective_of(record: dict[str, Any]) -> str:
    return record.get("tags", {}).get("labnet.objective") or "val_accuracy"


def build_rows(records: list[dict[str, Any]], params: list[str], extra: list[str] = ()) -> list[dict[str, Any]]:
    """One row per run: run name, the given params (as stored, strings), objective, main metrics, the ``extra``
    metrics' final values, status, duration."""
    rows = []
    for record in records:
        metrics, tags = record.get("metrics", {}), record.get("tags", {})
        objective = objective_of(record)
        start, end = record.get("start_time"), record.get("end_time")
        row: dict[str, Any] = {"run_name": record.get("run_name")}
        row.update({k: record.get("params", {}).get(k) for k in params})
        row["objective_metric"] = f"best_{objective}"
        row["objective"] = metrics.get(f"best_{objective}")
        row.update({m: metrics.get(m) for m in (*MAIN_METRICS, *extra)})
        row["status"] = record.get("status")
        row["duration_s"] = (end - start) / 1000 if start and end and end >= start else None
        row["run_id"] = record.get("run_id")
        row["error"] = tags.get("labnet.error")
        rows.append(row)
    return rows


def sort_key(row: dict[str, Any]) -> tuple:
    """Best first: runs with an objective (higher accuracy / lower loss first), then runs without one, failed last."""
    value = objective_value(row)
    failed = row.get("status") == "FAILED"
    if value is None:
        return (1 + failed, 0.0, row.get("run_name") or "", row.get("run_id") or "")
    sign = 1.0 if minimizes(row.get("objective_metric", "")) else -1.0
    return (2 if failed else 0, sign * value, row.get("run_name") or "", row.get("run_id") or "")


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=sort_key)


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """The mean of replicates' objectives (NaN for none) and their sample standard deviation (0 for fewer than
    two): a sweep's ``summary_by_config.csv`` and the error bars of the objective-vs-lr plot."""
    mean = sum(values) / len(values) if values else math.nan
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, std
