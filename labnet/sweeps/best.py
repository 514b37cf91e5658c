"""The best job of a sweep, by its objective's direction: one rule for the sweep's last line, the parent
run's description and its summary table."""

from __future__ import annotations

import math
from typing import Any

from labnet.train.objective import minimizes


def objective_value(result: Any) -> float | None:
    """A job's objective as a finite number, else None (failed before an epoch, diverged)."""
    value = result.get("objective")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def best_result(results: list[Any]) -> Any | None:
    """The finished job with the best objective (lowest for a loss, highest otherwise); ties go to the lower
    job. (A killed or failed job's objective is that of a run cut short.)"""
    scored = [r for r in results if r.get("status", "FINISHED") == "FINISHED" and objective_value(r) is not None]
    if not scored:
        return None
    sign = 1.0 if minimizes(scored[0].get("objective_metric") or "") else -1.0
    return min(scored, key=lambda r: (sign * objective_value(r), r.get("job") or 0))


def best_text(results: list[Any], name: str | None = None) -> str | None:
    """e.g. "best: job 3 adam-lr0.01-spiral (optimizer=adam optimizer.lr=0.01), best val_accuracy 0.9833"."""
    best = best_result(results)
    if best is None:
        return None
    shared = set.intersection(*(set(r.get("overrides") or []) for r in results))
    overrides = " ".join(o for o in best.get("overrides") or [] if o not in shared)  # what sets it apart
    label = f"job {best.get('job')}" + (f" {name}" if name else "") + (f" ({overrides})" if overrides else "")
    return f"best: {label}, best {best.get('objective_metric')} {objective_value(best):.4f}"


def closing_lines(sweep_id: str, report: str, results: list[Any], info: dict[str, Any]) -> list[str]:
    """The sweep's last lines: what ran, the best job and its objective, then (with a tracker that says
    where, ``info["look_further"]``) the commands to look further."""
    best = best_text(results, info.get("best_name"))
    lines = [f"labnet: sweep {sweep_id}: {report}" + (f"; {best}" if best else "")]
    if info.get("look_further"):
        lines.append("labnet: look further: " + "   ".join(info["look_further"]))
    return lines
