"""A sweep's tables on its parent run: ``summary.csv`` (one row per job) and, for replicates,
``summary_by_config.csv`` (mean and spread of the objective per configuration).

Both read like ``labnet compare``'s (whose rules they use): the run's name first, then the params that
vary, the objective, the main metrics; best first by the objective's direction; columns that are
constant or empty left out.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from labnet.compare.rows import (
    MAIN_METRICS,
    REPLICATE_KEYS,
    build_rows,
    mean_and_spread,
    result_record,
    sort_rows,
    varying_params,
)
from labnet.sweeps.best import objective_value
from labnet.train.objective import minimizes


def job_records(results: list[Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """The jobs as ``labnet compare`` records (``names``: MLflow run names by run id)."""
    return [result_record(r, names.get(r.get("run_id") or "")) for r in results]


def summary_rows(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per job, best first, and the names of the params that vary."""
    params = varying_params(records)
    rows = build_rows(records, params)
    for row, record in zip(rows, records, strict=True):
        row["job"] = record.get("job")
        row["objective"] = objective_value(row)
    return sort_rows(rows), params


def summary_columns(rows: list[dict[str, Any]], params: list[str]) -> list[str]:
    """run_name, the varying params, objective, main metrics, status, job, run_id; constant status and empty
    columns left out."""
    columns = ["run_name", *params, "objective", *MAIN_METRICS, "status", "job", "run_id"]
    if len({r.get("status") for r in rows}) == 1:
        columns.remove("status")
    return [c for c in columns if any(_present(r.get(c)) for r in rows)]


def replicate_groups(rows: list[dict[str, Any]], params: list[str], objective: str) -> list[dict[str, Any]]:
    """Mean ± std of the objective per configuration when jobs are replicates (differ only by seed), best
    mean first by the objective's direction."""
    if not any(r.get("sweep.replicate") not in (None, 0, "0") for r in rows):
        return []
    config = [p for p in params if p not in REPLICATE_KEYS]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row.get(p)) for p in config), []).append(row)
    out = []
    for members in groups.values():
        values = [v for v in (objective_value(m) for m in members) if v is not None]
        mean, std = mean_and_spread(values)
        first = members[0]
        out.append(
            {
                **{p: first.get(p) for p in config},
                "replicates": len(members),
                "finished": len(values),
                "objective": mean,
                "objective_std": std,
            }
        )
    sign = 1.0 if minimizes(objective) else -1.0
    return sorted(out, key=lambda g: (math.isnan(g["objective"]), sign * g["objective"] if g["finished"] else 0.0))


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({c: "" if r.get(c) is None else r.get(c) for c in columns} for r in rows)
    return Path(path)


def _present(value: Any) -> bool:
    return value is not None and value != "" and not (isinstance(value, float) and math.isnan(value))
