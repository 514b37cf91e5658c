"""labnet from Python (a notebook, a script): ``labnet.run``, ``labnet.sweep``, ``labnet.register``.

The same configs, experiments, checks, run folders and tracking as ``python -m labnet``; see
``launch`` for how, and docs/tutorial.ipynb for a tour.
"""

from __future__ import annotations

import os
from typing import Any

from labnet.api.launch import launch, overrides_from
from labnet.api.results import RunReport, SweepReport
from labnet.api.session import register, registered

__all__ = ["run", "sweep", "register", "registered", "RunReport", "SweepReport"]


def run(
    *overrides: str,
    experiment: str | None = None,
    config_dir: str | os.PathLike | None = None,
    **groups: Any,
) -> RunReport:
    """Train one run, as ``python -m labnet [+experiment=NAME] OVERRIDES`` would, and return its record.

    ``labnet.run("optimizer=adam", experiment="mnist_two_layer", trainer={"epochs": 3})``: overrides are
    the command line's strings; a keyword with a dict sets keys of that group, any other keyword value
    sets the key or picks the group's config (``optimizer="sgd"``); ``config_dir`` is ``--config-dir``.
    MLflow tracks it as on the command line, but the call returns once MLflow holds the run
    (``tracking.sync=wait``, unless ``LABNET_SYNC`` or ``tracking={"sync": ...}`` says otherwise).

    Raises ``labnet.ConfigError`` for a config mistake (the command line's message); Ctrl-C (interrupt the
    kernel) writes a checkpoint and raises ``Interrupted``, which names the folder to resume.
    """
    argv = overrides_from(overrides, experiment, groups)
    return RunReport(launch(argv, multirun=False, config_dir=config_dir))


def sweep(
    *overrides: str,
    experiment: str | None = None,
    launcher: str | None = None,
    config_dir: str | os.PathLike | None = None,
    **groups: Any,
) -> SweepReport:
    """A multirun, as ``python -m labnet -m OVERRIDES`` would run it; returns the jobs and their table.

    ``labnet.sweep("optimizer=sgd,adam", "optimizer.lr=0.01,0.1", trainer={"epochs": 20})`` runs the grid;
    ``launcher="joblib"`` is ``hydra/launcher=joblib``; a sweeper is an override (``hydra/sweeper=optuna``)
    or comes with its experiment (``experiment="optuna_lr"``). Components registered with
    ``labnet.register`` are seen by jobs that run in this process (Hydra's basic launcher), not by joblib's
    or Ray's worker processes.
    """
    argv = overrides_from(overrides, experiment, groups, launcher=launcher)
    return SweepReport(launch(argv, multirun=True, config_dir=config_dir))
