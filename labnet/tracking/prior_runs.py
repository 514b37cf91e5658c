"""What a sweep already has: the runs of its experiment, by what they computed, for skipping and resuming.

A run counts as the same job when it was configured the same and trained by the same code
(``labnet.config_hash``: the config and the labnet and plugin versions). A finished run of the same config
by other code versions is listed too (``params:<hash>``), so the job that trains again can say why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RANK = {"FINISHED": 0, "KILLED": 1}  # a FINISHED run is preferred; a KILLED one resumes from its checkpoint


def prior_runs(client, experiment_id: str) -> dict[str, dict[str, Any]]:
    """Runs of the experiment by config hash (FINISHED preferred, then KILLED with a checkpoint), and the
    finished ones also by ``params:<params hash>``."""
    found: dict[str, dict[str, Any]] = {}
    for run in client.search_runs([experiment_id], filter_string="tags.`labnet.config_hash` != ''", max_results=5000):
        tags, status = run.data.tags, run.info.status
        if status not in RANK:
            continue
        objective = tags.get("labnet.objective", "val_accuracy")
        output_dir = tags.get("labnet.output_dir")
        entry = {
            "run_id": run.info.run_id,
            "status": status,
            "objective_metric": objective,
            "objective": run.data.metrics.get(f"best_{objective}"),
            "metrics": {k: v for k, v in run.data.metrics.items() if "/" not in k},
            "checkpoint": str(Path(output_dir) / "checkpoint.npz") if output_dir else None,
            "code_versions": json.loads(tags.get("labnet.code_versions", "{}") or "{}"),
        }
        keys = [tags.get("labnet.config_hash")]
        if status == "FINISHED" and tags.get("labnet.params_hash"):
            keys.append("params:" + tags["labnet.params_hash"])
        for key in filter(None, keys):
            if key not in found or RANK[found[key]["status"]] > RANK[status]:
                found[key] = entry
    return found
