"""A compared run as a record (plain dict): read from an MLflow run, its params parsed back, rows built and
sorted best first. Pure functions: tests call them directly."""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

from labnet.config import RUN_INVARIANT_PREFIXES
from labnet.errors import LabnetError
from labnet.train.objective import minimizes

FORMATS = ("table", "csv", "json", "markdown")
#: final values of these metrics are shown for every run (test_accuracy only when some run has it)
MAIN_METRICS = ("val_accuracy", "test_accuracy", "train_loss")
IGNORED_PARAM_PREFIXES = RUN_INVARIANT_PREFIXES
MAX_RESULTS = 50_000  # MLflow's upper limit for one search_runs page
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SWEEP_ID_RE = re.compile(r"^[0-9A-Za-z_.-]+$")


class CompareError(LabnetError):
    """A store, sweep, run or experiment that `labnet compare` cannot find or read."""


# -- the command -----------------------------------------------------------------------------------



def record_from_run(run) -> dict[str, Any]:
    """An MLflow ``Run`` (or an already plain dict of the same content) as a plain dict."""
    if isinstance(run, dict):
        return run
    info, data = run.info, run.data
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "params": dict(data.params),
        "metrics": dict(data.metrics),
        "tags": dict(data.tags),
    }


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


def lower_is_better(objective: str) -> bool:
    return minimizes(objective)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def metric_names(text: str) -> list[str]:
    """``--metrics a,b``: the names, in order, without repeats (argparse reports a ValueError as a usage error)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give metric names separated by commas, e.g. lr,train_loss")
    return list(dict.fromkeys(names))


def check_metrics(records: list[dict[str, Any]], wanted: list[str]) -> None:
    """A CompareError for a metric no run logged, listing those that were."""
    logged = sorted({m for record in records for m in record.get("metrics", {})})
    unknown = [m for m in wanted if m not in logged]
    if unknown:
        raise CompareError(
            f"--metrics: no run logged {', '.join(map(repr, unknown))}; the runs logged: {', '.join(logged) or 'none'}"
        )


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
    value = _finite(row.get("objective"))
    failed = row.get("status") == "FAILED"
    if value is None:
        return (1 + failed, 0.0, row.get("run_name") or "", row.get("run_id") or "")
    sign = 1.0 if lower_is_better(row.get("objective_metric", "")) else -1.0
    return (2 if failed else 0, sign * value, row.get("run_name") or "", row.get("run_id") or "")


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=sort_key)


def last_activity(record: dict[str, Any]) -> int:
    # a sweep run again continues its old parent run, so the newest sweep is the newest start *or* end
    return max(record.get("start_time") or 0, record.get("end_time") or 0)


