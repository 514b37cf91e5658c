"""What `labnet compare` asks of the runs it reads: an MLflow run as a record (plain dict; its row is
built by :mod:`labnet.compare.rows`), the ids it accepts, the metrics it is asked for. Pure functions:
tests call them directly."""

from __future__ import annotations

import argparse
import re
from typing import Any

from labnet.errors import LabnetError

MAX_RESULTS = 50_000  # MLflow's upper limit for one search_runs page
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SWEEP_ID_RE = re.compile(r"^[0-9A-Za-z_.-]+$")


class CompareError(LabnetError):
    """A store, sweep, run or experiment that `labnet compare` cannot find or read."""


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


def last_activity(record: dict[str, Any]) -> int:
    # a sweep run again continues its old parent run, so the newest sweep is the newest start *or* end
    return max(record.get("start_time") or 0, record.get("end_time") or 0)
