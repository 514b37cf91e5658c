"""A run's result: one typed record, written once when the run ends (``result.json``), read by the
sweep's report, ``labnet compare`` and the studies."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from labnet.record.files import atomic_write_text
from labnet.record.journal import JournalState, read_state

RESULT_FILE = "result.json"
SYNC_STATE_FILE = ".sync.json"  # written by the MLflow mirror: the MLflow run id of this folder's run


@dataclass
class RunResult:
    """What a run (or a sweep job that trained nothing) ended with."""

    status: str  # FINISHED, FAILED, KILLED; SKIPPED: a sweep job not run (fail_fast)
    job: int = 0
    overrides: list[str] = field(default_factory=list)
    error: str | None = None
    config_mistake: bool = False  # the error is a config mistake (a single run would exit with code 2)
    objective_metric: str = "val_accuracy"
    objective: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    run_key: str | None = None
    run_id: str | None = None  # the MLflow mirror's run, once known
    config_hash: str | None = None
    output_dir: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    skipped: bool = False  # a sweep job already FINISHED earlier, not trained again
    start_time: float | None = None
    end_time: float | None = None

    def write(self, folder: Path) -> Path:
        return atomic_write_text(Path(folder) / RESULT_FILE, json.dumps(asdict(self), indent=2, default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, folder: Path) -> RunResult | None:
        """The folder's result; for a run that died before writing one, what its journal says."""
        folder = Path(folder)
        try:
            result = cls.from_dict(json.loads((folder / RESULT_FILE).read_text()))
        except (OSError, ValueError):
            result = from_journal(folder, read_state(folder))
        if result is not None and result.run_id is None:
            result.run_id = mirrored_run_id(folder)
        return result

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access, for plugins written against the result dicts of earlier versions."""
        return getattr(self, key, default)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def from_journal(folder: Path, state: JournalState) -> RunResult | None:
    """A result built from the journal alone (the process was killed before it wrote ``result.json``)."""
    if not state.segments:
        return None
    start, end = state.start, state.end
    history = [dict(r["metrics"]) for _, r in sorted(state.epochs().items())]
    objective_metric = start.get("objective", "val_accuracy")
    values = [h[objective_metric] for h in history if isinstance(h.get(objective_metric), (int, float))]
    best = (min(values) if "loss" in objective_metric else max(values)) if values else math.nan
    return RunResult(
        status=end["status"] if end else "KILLED",
        job=start.get("job", 0),
        overrides=start.get("overrides", []),
        error=(end or {}).get("error") or (None if end else "the run's process ended without ending it"),
        objective_metric=objective_metric,
        objective=best,
        metrics=history[-1] if history else {},
        params=start.get("params", {}),
        run_key=start.get("run_key"),
        config_hash=start.get("tags", {}).get("labnet.config_hash"),
        output_dir=str(Path(folder).resolve()),
        history=history,
        start_time=start.get("time"),
        end_time=(end or {}).get("time") or state.last_time,
    )


def mirrored_run_id(folder: Path) -> str | None:
    try:
        return json.loads((Path(folder) / SYNC_STATE_FILE).read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def read_results(sweep_dir: Path) -> list[RunResult]:
    """Every job's result under a sweep folder, ordered by job number."""
    results = []
    for folder in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()) if Path(sweep_dir).is_dir() else []:
        if (folder / RESULT_FILE).is_file() or (folder / "journal.jsonl").is_file():
            result = RunResult.read(folder)
            if result is not None:
                results.append(result)
    return sorted(results, key=lambda r: r.job)
