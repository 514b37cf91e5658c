"""A run read from a tracking store, as a record: a plain dict (run id and name, experiment, status, times in
ms, params as stored, metrics, tags) whichever store it came from; its row is built by
:mod:`labnet.compare.rows`."""

from __future__ import annotations

from typing import Any

from labnet.errors import LabnetError

MAX_RESULTS = 50_000  # MLflow's upper limit for one search_runs page


class CompareError(LabnetError):
    """A store, sweep, run or experiment that cannot be found or read (`labnet compare` prints it, exit code 2)."""


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


def last_activity(record: dict[str, Any]) -> int:
    # a sweep run again continues its old parent run, so the newest sweep is the newest start *or* end
    return max(record.get("start_time") or 0, record.get("end_time") or 0)
