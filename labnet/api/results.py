"""What ``labnet.run`` and ``labnet.sweep`` return: a run's (or a sweep's) record read back from its
folder, as data a notebook works with (pandas tables, the trained model, figures drawn inline)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from labnet.record.result import RunResult, read_results


class RunReport:
    """One run, read from its folder: ``metrics`` (final), ``history`` (a DataFrame, one row per epoch),
    ``model`` (the trained net), ``data`` (its data set, split as the run split it), ``run_id`` (MLflow's)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        record = RunResult.read(self.folder)
        if record is None:
            raise FileNotFoundError(f"{self.folder} holds no labnet run (no result.json or journal.jsonl)")
        self.record: RunResult = record

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.record.metrics)

    @property
    def objective(self) -> float:
        """The best value of ``objective_metric`` over the epochs (what a sweeper compares)."""
        return self.record.objective

    @property
    def objective_metric(self) -> str:
        return self.record.objective_metric

    @property
    def run_id(self) -> str | None:
        """The run's MLflow id (None while MLflow does not hold it yet: ``tracking.sync=background``)."""
        return self.record.run_id or RunResult.read(self.folder).run_id

    @property
    def error(self) -> str | None:
        return self.record.error

    @cached_property
    def history(self):
        """The per-epoch metrics as a DataFrame indexed by epoch (1, 2, ...)."""
        import pandas as pd

        rows = self.record.history
        return pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1, name="epoch"))

    @cached_property
    def config(self):
        """The run's resolved config (a DictConfig), from the params its journal recorded."""
        from omegaconf import OmegaConf

        nested: dict[str, Any] = {}
        for key, value in self.record.params.items():
            *parents, leaf = key.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return OmegaConf.create(nested)

    def registry(self):
        """The components this run could use: its plugins (``plugins.block``), the session's included."""
        from labnet.plugins import Registry
        from labnet.run_policy import plugin_manager_for

        return Registry(plugin_manager_for(self.config))

    @cached_property
    def data(self):
        """The run's data set (``DataSplits``), loaded and split with the run's seed and dtype, as the run did."""
        import numpy as np
        from omegaconf import OmegaConf

        from labnet.config import build_component

        cfg = self.config
        section = OmegaConf.to_container(cfg.dataset, resolve=True)
        dataset = build_component(self.registry().get("dataset", cfg.dataset.name), "dataset", section)
        dtype = np.dtype(cfg.trainer.get("dtype", "float32"))
        return dataset.load(np.random.default_rng(cfg.seed), dtype=dtype)

    @cached_property
    def model(self):
        """The trained net (``Sequential``): ``weights.npz`` loaded into the layers ``model_spec.json`` names
        (written when the run is tracked), else into the net the run's config builds."""
        import numpy as np
        from omegaconf import OmegaConf

        from labnet.build import build_model, model_from_spec
        from labnet.train.checkpoint import load_npz

        state = load_npz(self.folder / "weights.npz")
        spec_file = self.folder / "model_spec.json"
        if spec_file.is_file():
            return model_from_spec(json.loads(spec_file.read_text()), self.registry(), state)
        cfg = self.config
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        dtype = np.dtype(cfg.trainer.get("dtype", "float32"))
        model = build_model(model_cfg, self.data, self.registry(), np.random.default_rng(0), dtype)
        model.load_state_dict(state)
        return model

    def plot(self):
        """Loss and accuracy per epoch (the run's ``curves.png``), as a figure a notebook shows inline."""
        from labnet.tracking.plots import draw_curves

        fig = new_figure(figsize=(10, 4))
        draw_curves(fig, self.record.history)
        return fig

    def __repr__(self) -> str:
        shown = "  ".join(
            f"{k}={v:.4f}" for k, v in self.record.metrics.items() if isinstance(v, float) and "/" not in k
        )
        return f"<labnet run {self.status} in {self.folder}: {shown}>"


class SweepReport:
    """A sweep, read from its folder: ``jobs`` (a RunReport each) and ``table``, the ``labnet compare``
    table of its runs (the params that vary, the objective, final metrics, status; best first)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.records = read_results(self.folder)
        self.params, self.rows = compare_rows(self.folder, self.records)

    @cached_property
    def jobs(self) -> list[RunReport]:
        return [RunReport(r.output_dir) for r in self.records if r.output_dir]

    @cached_property
    def table(self):
        """One row per job, as ``labnet compare --format csv`` prints them."""
        import pandas as pd

        from labnet.compare.formats import columns

        return pd.DataFrame(self.rows, columns=columns(self.rows, self.params, "csv"))

    def plot(self, title: str | None = None):
        """The objective against the learning rate, one line per optimizer (``labnet compare --plot``)."""
        from labnet.compare.plot import draw_objective

        fig = new_figure(figsize=(6.5, 4.2))
        draw_objective(fig, self.rows, self.params, title=title or f"sweep {self.folder}")
        return fig

    def _repr_html_(self) -> str:
        return f"<p>labnet sweep in {self.folder}: {len(self.rows)} runs</p>" + self.table._repr_html_()

    def __repr__(self) -> str:
        return f"<labnet sweep in {self.folder}: {len(self.rows)} runs>\n{self.table.to_string(index=False)}"


def compare_rows(sweep_dir: Path, records: list[RunResult]) -> tuple[list[str], list[dict[str, Any]]]:
    """The varying params and the ``labnet compare`` rows (best first) of a sweep's jobs, from their folders."""
    from labnet.compare.rows import build_rows, result_record, sort_rows, varying_params
    from labnet.record.journal import read_state

    runs = []
    for record in records:
        folder = Path(record.output_dir) if record.output_dir else None
        start = read_state(folder).start if folder is not None and (folder / "journal.jsonl").is_file() else {}
        runs.append(result_record(record, start.get("name")))
    params = varying_params(runs)
    return params, sort_rows(build_rows(runs, params))


def new_figure(figsize: tuple[float, float]):
    """A matplotlib figure outside pyplot (no backend switched, nothing left open), which Jupyter shows
    inline when it is a cell's value."""
    from matplotlib.figure import Figure

    _show_figures_inline()
    return Figure(figsize=figsize, dpi=100)


def _show_figures_inline() -> None:
    """In IPython, make sure a Figure that is a cell's value is shown as a picture (the inline backend
    registers this only once pyplot is imported)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    from matplotlib.figure import Figure

    formatter = shell.display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        formatter.for_type(Figure, _png)


def _png(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
