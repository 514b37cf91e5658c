"""What a sweep's parent run says in `mlflow ui`: the params every job shared, and a description (the
markdown of the run's Overview) naming the best job, its objective and params, the counts, and the
commands to look further, which the sweep's last terminal line repeats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labnet.compare.rows import MAIN_METRICS
from labnet.store_uri import sqlite_path
from labnet.train.objective import minimizes

NOTE_TAG = "mlflow.note.content"
MAX_NOTE_LENGTH = 7000  # MLflow 3 truncates a run tag at 8000 characters
TOP_ROWS = 5


def shared_params(results: list[Any]) -> dict[str, Any]:
    """The params with one value in every job that has params (what the sweep held fixed)."""
    params = [r.get("params") or {} for r in results if r.get("params")]
    if not params:
        return {}
    keys = set.intersection(*(set(p) for p in params))
    return {
        k: params[0][k]
        for k in sorted(keys)
        if len({json.dumps(p[k], sort_keys=True, default=str) for p in params}) == 1
    }


def ui_command(uri: str, cwd: Path | None = None) -> str:
    """How to open the store in a browser: plain `mlflow ui` where MLflow's default store is, else with
    the store named; a server is opened at its address."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    path = sqlite_path(uri)
    if path is not None and path == (Path(cwd or Path.cwd()) / "mlflow.db").resolve():
        return "mlflow ui"
    return f"mlflow ui --backend-store-uri {uri}"


def look_further(sweep_id: str, uri: str, cwd: Path | None = None) -> list[str]:
    return [f"labnet compare --sweep {sweep_id}", ui_command(uri, cwd)]


def describe(
    sweep_id: str,
    rows: list[dict[str, Any]],
    params: list[str],
    objective: str,
    counts: dict[str, int],
    commands: list[str],
    overrides: list[str],
) -> str:
    """The parent run's description: best job first, then counts, the top rows, the commands, the overrides."""
    direction = "lower is better" if minimizes(objective) else "higher is better"
    best = rows[0] if rows and rows[0].get("objective") is not None else None
    lines = [f"### Sweep `{sweep_id}`"]
    if best is not None:
        setting = ", ".join(f"`{p}={best.get(p)}`" for p in params) or "the only configuration"
        lines += [
            f"**Best: `{best.get('run_name')}`** (job {best.get('job')}): best {objective} "
            f"**{best['objective']:.4f}** ({direction}), with {setting}.",
        ]
    else:
        lines += ["No job reached an objective value."]
    counted = ", ".join(f"{n} {what}" for what, n in counts.items() if what != "jobs" and n or what == "failed")
    lines += ["", f"{counts.get('jobs', len(rows))} jobs: {counted}.", ""]
    if rows:
        shown = rows[:TOP_ROWS]
        lines += [f"Best {len(shown)} of {len(rows)} (every job in `summary.csv`, under Artifacts):", ""]
        lines += [markdown_table(shown, params, objective), ""]
    lines += [
        "What every job shared is under **Parameters**; the jobs are this run's child runs.",
        "",
        "Look further:",
        "```",
        *commands,
        "```",
    ]
    text = "\n".join(lines)
    listed = "\n".join(["", "Overrides:", "```", " ".join(overrides), "```"])
    if len(text) + len(listed) <= MAX_NOTE_LENGTH:
        return text + listed
    return text + "\n\nOverrides: too long to show here; see `overrides.txt` under Artifacts."


def markdown_table(rows: list[dict[str, Any]], params: list[str], objective: str) -> str:
    """run name, varying params, objective and main metrics (4 decimals), one line per row."""
    metrics = [m for m in MAIN_METRICS if any(r.get(m) is not None for r in rows)]
    header = ["run", *params, f"best {objective}", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r.get("run_name")), *(str(r.get(p)) for p in params)]
        cells += [_number(r.get(k)) for k in ("objective", *metrics)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.4f}"
