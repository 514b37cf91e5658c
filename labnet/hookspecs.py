"""The whole labnet plugin contract on one page.

A plugin is a module (or object) with functions named like these hooks and marked
with ``@labnet.hookimpl``. An implementation may accept fewer arguments than its
spec, so labnet can add arguments later without breaking plugins. Hooks are called
last-registered-first unless ``tryfirst`` / ``trylast`` say otherwise.

The same nouns name the same things everywhere: ``run`` (the run being trained, a
:class:`Run`, below), ``cfg`` (the composed OmegaConf config), ``epoch``,
``metrics`` (a dict of floats), ``model`` (the :class:`labnet.nn.model.Sequential` being
trained), ``optimizer`` (the run's optimizer; ``optimizer.lr`` is its current learning rate).

What a hook can read of ``run``:

- ``run.name``: e.g. ``adam-lr0.001-spiral``; ``run.output_dir``: the run's folder (its journal,
  checkpoint, weights and result, and any file a plugin writes);
- ``run.cfg``: the composed config; ``run.data``: the loaded splits (``run.data.train.x`` ...);
  ``run.dataset``, ``run.loss``, ``run.optimizer``, ``run.model``: the built components;
  ``run.registry`` and ``run.manager``: the components and plugins of this process;
- ``run.run_key``: the run's identity in its journal and its MLflow mirror, kept across resumes;
  ``run.config_hash``: what makes two sweep jobs the same; ``run.resumed_from_epoch``;
  ``run.journal``: the run's journal (:class:`labnet.record.journal.Journal`); ``run.hydra``: Hydra's
  runtime config, when Hydra runs it;
- where it stands: ``run.epoch``, ``run.step``, ``run.history`` (one metrics dict per epoch),
  ``run.step_numbers`` / ``run.step_losses`` (the last epoch's steps), ``run.objective_metric``,
  ``run.best_objective``, ``run.best_epoch``;
- what a plugin may set: ``run.stop_reason`` (stop after this epoch), ``run.info[...]``: each plugin's
  own state, under its own key (``run.info["health"]``), and ``run.info["artifacts"]``: extra files
  for the tracker to log.

Hooks are called in this order for a run: ``labnet_configure`` (before the data load),
``labnet_run_start``, ``labnet_resume`` (a resumed run), ``labnet_epoch_end`` and
``labnet_checkpoint`` each epoch, ``labnet_run_end``; for a sweep ``labnet_sweep_start`` before any
job and ``labnet_sweep_end`` after the last, in the launching process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("labnet")
hookimpl = pluggy.HookimplMarker("labnet")


def _empty(dtype: str):
    import numpy as np  # (here: `import labnet` stays free of NumPy, and `labnet --help` fast)

    return np.empty(0, dtype)


@dataclass
class Run:
    """What lifecycle hooks see of a run: what it is made of, where it stands, and each plugin's own state.

    ``output_dir`` is the run's folder (its journal, checkpoint, weights and result); ``info`` is the
    namespace where plugins keep their own state (``run.info["health"]``) and list extra files to log
    (``run.info["artifacts"]``).
    """

    name: str
    output_dir: Path
    cfg: Any = None
    data: Any = None  # labnet.data.base.DataSplits
    dataset: Any = None
    loss: Any = None  # labnet.nn.losses.Loss
    optimizer: Any = None  # labnet.nn.optimizers.Optimizer
    model: Any = None  # labnet.nn.model.Sequential
    registry: Any = None  # labnet.plugins.Registry
    manager: Any = None  # labnet.plugins.LabnetPluginManager
    hydra: Any = None  # Hydra's runtime config, when run by Hydra
    run_key: str = ""  # the run's identity in its journal and its MLflow mirror (kept across resumes)
    config_hash: str = ""
    resumed_from_epoch: int | None = None
    journal: Any = None  # labnet.record.journal.Journal
    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    #: global step numbers and training losses of the epoch that just ended (for batched logging)
    step_numbers: Any = field(default_factory=lambda: _empty("int64"))  # a NumPy array
    step_losses: Any = field(default_factory=lambda: _empty("float64"))
    #: a hook sets this to stop training after the current epoch
    stop_reason: str | None = None
    objective_metric: str = "val_accuracy"
    best_objective: float = float("nan")
    best_epoch: int = 0
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# registration: which components a plugin provides
# ---------------------------------------------------------------------------


@hookspec
def labnet_layers() -> list[type]:
    """Return the layer classes this plugin provides.

    :returns: a list of classes; each class's ``name`` attribute is the name
        users type in a model's layer specs (``{type: conv2d, ...}``).
    """


@hookspec
def labnet_optimizers() -> list[type]:
    """Return the optimizer classes this plugin provides (``optimizer=NAME``)."""


@hookspec
def labnet_losses() -> list[type]:
    """Return the loss classes this plugin provides (``loss=NAME``)."""


@hookspec
def labnet_datasets() -> list[type]:
    """Return the data set classes this plugin provides (``dataset=NAME``)."""


@hookspec
def labnet_config_dirs() -> list[str]:
    """Return folders of Hydra config groups this plugin ships.

    A folder holding ``model/simple_convnet.yaml`` makes ``model=simple_convnet``
    available. Components without a YAML still get a config derived from their
    constructor's signature.
    """


# ---------------------------------------------------------------------------
# lifecycle: observe or steer a run
# ---------------------------------------------------------------------------


@hookspec
def labnet_configure(cfg) -> None:
    """Called once per run when its config has been checked (what needs no data), before its data are loaded.

    A plugin starts here the slow work it will need later, so that it overlaps with
    loading the data (the MLflow tracker starts the process that imports MLflow).

    :param cfg: the composed config (an OmegaConf ``DictConfig``).
    """


@hookspec
def labnet_run_start(run, cfg, model) -> None:
    """Called once before the first epoch, after the model is built.

    :param run: the run being trained (``run.name``, ``run.output_dir``, ``run.info``).
    :param cfg: the composed config (an OmegaConf ``DictConfig``).
    :param model: the model about to be trained.
    """


@hookspec
def labnet_epoch_end(run, epoch, metrics, model, optimizer) -> None:
    """Called after each epoch's evaluation.

    :param epoch: the epoch that just ended, counted from 1.
    :param metrics: this epoch's metrics (``train_loss``, ``val_accuracy``, ...);
        a hook may add entries, which later hooks and the tracker see.
    :param model: the model as the epoch left it; a hook may set ``run.stop_reason`` to stop training.
        With ``trainer.eval_background`` the hooks of epoch k run at the end of epoch k+1 (when its
        evaluation is in) and ``model`` is a copy of epoch k's weights and last gradients: read the
        model from this argument, not one kept from ``labnet_run_start``.
    :param optimizer: the run's :class:`labnet.nn.optimizers.Optimizer`; ``optimizer.lr`` is the learning
        rate the epoch trained with, ``optimizer.step_count`` the steps taken so far (with
        ``trainer.eval_background``, those of the epoch that is training now). In a fused group, the member's
        own optimizer: its settings and step count (its state is kept in the stacked model's).
    """


@hookspec
def labnet_checkpoint(run) -> dict | None:
    """Return the arrays this plugin needs to continue exactly where a resumed run left off.

    Called whenever a checkpoint is written; the arrays are saved in it (keys are the plugin's own:
    prefix them with the plugin's name) and handed back to :func:`labnet_resume`. The health monitor
    keeps the weights its epoch started with here, so a resumed run reports the same figures.

    :returns: a dict of NumPy arrays (plain numeric: checkpoints are never unpickled), or None.
    """


@hookspec
def labnet_resume(run, state) -> None:
    """Called once when a run resumes from a checkpoint, after ``labnet_run_start``.

    :param state: every plugin's arrays as returned by :func:`labnet_checkpoint` when it was written.
    """


@hookspec
def labnet_run_end(run, status, metrics, model, error) -> None:
    """Called once when a run ends, however it ends.

    An exception raised here fails the run (FAILED in its result, its journal and MLflow, naming the plugin).

    :param run: the run (its ``history`` complete, ``run.info["weights_path"]`` the saved weights).
    :param status: ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``.
    :param metrics: the final metrics (``test_accuracy`` when there is a test split).
    :param model: the trained model, as its weights were saved.
    :param error: the exception that ended the run, or ``None``.
    """


@hookspec
def labnet_sweep_start(sweep) -> None:
    """Called in the launching process before the first job of a multirun starts.

    An error raised here stops the sweep before any job runs (a ``ConfigError`` for a bad option
    of the plugin's, exit code 2; any other exception is reported naming the plugin, exit code 1).

    :param sweep: the sweep (``sweep.id``, ``sweep.dir``, ``sweep.cfg``).
    """


@hookspec
def labnet_sweep_end(sweep, results) -> None:
    """Called in the launching process after the last job of a multirun ended.

    :param sweep: the sweep (``sweep.id``, ``sweep.dir``, ``sweep.cfg``), as ``labnet_sweep_start`` saw it.
    :param results: one dict per job: its overrides, status and objective, read from the
        jobs' ``result.json``; the MLflow tracker (called first) adds, in place, the jobs
        whose file stayed on another machine, from their MLflow runs.
    """
