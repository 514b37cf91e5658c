"""labnet's Hydra app launched inside this process the way ``python -m labnet`` launches it, then the
process put back as it was.

Why Hydra's own ``Hydra.run`` / ``Hydra.multirun`` rather than ``compose`` + ``run_experiment``: a
composed config has no ``HydraConfig``, so the run would have no folder of its own
(``hydra.run.dir``), no ``.hydra/`` record, no ``app.log``, no sweep callback and no launcher or
sweeper. Launched as here (what hydra-zen's ``launch()`` does), a notebook run gets the same folder,
record, callbacks, launchers and sweepers as on the command line, from the same search path
(labnet's conf/, the experiments, the plugins' config folders, ``config_dir`` as ``--config-dir``).

A terminal's process ends after one command; a notebook's kernel runs many. What a command leaves
behind in its process is undone after each call: Hydra's global state, the environment (a sweep
exports its MLflow parent run, which would make the next run its child), the logging handlers
(Hydra's ``app.log`` of the last run would collect the notebook's logging), matplotlib's backend
(the sweep summary draws with Agg, which would stop the notebook's own inline plots), joblib's worker
processes (they would run the next sweep's jobs with this sweep's environment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from labnet.errors import ConfigError, LabnetError

#: Hydra's job name on the command line (from ``labnet.app``): the run's log file is ``app.log`` as there
TASK_NAME = "app"
CONFIG_NAME = "config"
#: the environment a notebook call runs with unless the notebook set these itself
NOTEBOOK_ENVIRONMENT = {
    "LABNET_SYNC": "wait",  # tracking.sync: return when MLflow holds the run, so its run id is known
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # no MLflow INFO lines in the cell (the sweep's parent run, ...)
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
_PLAIN = re.compile(r"^[\w.+\-/:@]+$")


def hydra_value(value: Any, nested: bool = False) -> str:
    """``value`` in Hydra's override syntax: ``true``, ``null``, ``[50,50]``, ``{type:affine,units:10}``.
    A string at the top is passed as written (``"sgd,adam"`` sweeps, as on the command line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v, nested=True) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v, nested=True)}" for k, v in value.items()) + "}"
    text = str(value)
    if not nested or _PLAIN.match(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides_from(
    overrides: tuple[str, ...] | list[str],
    experiment: str | None = None,
    groups: Mapping[str, Any] | None = None,
    launcher: str | None = None,
) -> list[str]:
    """The command line's overrides for ``labnet.run("optimizer=adam", experiment=..., trainer={"epochs": 3})``:
    a keyword with a dict sets keys in that group (``trainer.epochs=3``), any other value sets the key or
    picks the group's config (``optimizer="sgd"``)."""
    argv = []
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(
                f"override {item!r}: overrides are strings as on the command line (e.g. 'optimizer.lr=0.1'); "
                "pass values as keywords instead: optimizer={'lr': 0.1}"
            )
        argv.append(item)
    if experiment is not None:
        argv.append(f"+experiment={experiment}")
    if launcher is not None:
        argv.append(f"hydra/launcher={launcher}")

    def add(key: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for sub, inner in value.items():
                add(f"{key}.{sub}", inner)
        else:
            argv.append(f"{key}={hydra_value(value)}")

    for key, value in (groups or {}).items():
        add(key, value)
    return argv


def launch(overrides: list[str], *, multirun: bool, config_dir: str | os.PathLike | None = None) -> Path:
    """Run labnet's Hydra app on ``overrides`` as ``python -m labnet [-m] [--config-dir DIR] OVERRIDES`` does.

    Returns the run's folder (or the sweep's). A mistake the command line reports with exit code 2 raises
    :class:`ConfigError` with the command line's message; other labnet errors, and an interrupted run
    (:class:`labnet.train.trainer.Interrupted`, after its checkpoint), are raised as they are.
    """
    from labnet.__main__ import prepare_hydra
    from labnet.sweeps.callback import SweepAborted
    from labnet.sweeps.identity import expand_replicates

    argv = ["-m", *overrides] if multirun else list(overrides)
    with kept_process_state():
        try:
            argv = expand_replicates(argv)
            overrides = [a for a in argv if a != "-m"]
            hydra = _main_hydra(prepare_hydra(overrides), config_dir)
            return _multirun(hydra, overrides) if multirun else _run(hydra, overrides)
        except (Exception, SweepAborted) as err:  # (SweepAborted: a BaseException, to get past Hydra)
            raise_as_cli(err, argv)


def _main_hydra(conf: Path, config_dir: str | os.PathLike | None):
    """Hydra set up as ``hydra.main(config_path=conf)`` sets it up, ``config_dir`` as ``--config-dir``."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.errors import SearchPathException

    search_path = create_config_search_path(str(conf))
    if config_dir is not None:
        folder = os.path.abspath(config_dir)
        if not os.path.isdir(folder):
            raise SearchPathException(f"Additional config directory '{folder}' not found")
        search_path.prepend(provider="command-line", path=f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    return Hydra.create_main_hydra2(task_name=TASK_NAME, config_search_path=search_path)


def _run(hydra, overrides: list[str]) -> Path:
    from hydra.types import RunMode

    from labnet.app import task

    if hydra.get_mode(config_name=CONFIG_NAME, overrides=overrides) == RunMode.MULTIRUN:
        raise ConfigError(
            f"{' '.join(overrides)}: this config is a sweep (hydra.mode=MULTIRUN); run it with labnet.sweep(...)"
        )
    job = hydra.run(config_name=CONFIG_NAME, task_function=task, overrides=overrides)
    return Path(job.hydra_cfg.hydra.runtime.output_dir)


def _multirun(hydra, overrides: list[str]) -> Path:
    """The sweep, in the folder the command line would give it: resolved here first, then handed to the
    sweep as ``hydra.sweep.dir`` (any launcher or sweeper writes its jobs there)."""
    from hydra.types import RunMode

    from labnet.app import task

    if hydra.get_mode(config_name=CONFIG_NAME, overrides=overrides) is None:
        overrides = [*overrides, "hydra.mode=MULTIRUN"]  # (as Hydra's own -m)
    cfg = hydra.compose_config(
        config_name=CONFIG_NAME, overrides=overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False
    )
    sweep_dir = Path(cfg.hydra.sweep.dir)
    hydra.multirun(
        config_name=CONFIG_NAME,
        task_function=task,
        overrides=[*overrides, f"hydra.sweep.dir={hydra_value(str(sweep_dir), nested=True)}"],
    )
    return sweep_dir


def raise_as_cli(err: BaseException, argv: list[str]):
    """Raise what the command line reports for ``err``: its exit code 2 as ConfigError with the same message."""
    from hydra.core.global_hydra import GlobalHydra

    from labnet.__main__ import explain
    from labnet.sweeps.callback import SweepAborted
    from labnet.train.trainer import Interrupted

    if os.environ.get("LABNET_DEBUG") == "1":
        raise err
    GlobalHydra.instance().clear()  # (explain composes again to list a group's keys, as after the CLI's Hydra)
    error = err.error if isinstance(err, SweepAborted) else err
    message, code = explain(error, argv)
    if code == 2 and not isinstance(error, ConfigError):
        raise ConfigError(message) from None
    if isinstance(error, (LabnetError, Interrupted)):  # the message says it all; Hydra's frames would not
        raise error.with_traceback(None) from None
    raise error


@contextlib.contextmanager
def kept_process_state() -> Iterator[None]:
    """The process as it was before, after a launch (see the module's docstring); a clean Hydra inside."""
    from hydra.core.global_hydra import GlobalHydra

    environ = dict(os.environ)
    loggers = [logging.getLogger(), logging.getLogger("hydra")]
    handlers = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    backend = _backend_setting()
    for key, value in NOTEBOOK_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # (as the command line: errors reach us, we decide what to show)
    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings():
            # a library importing tqdm.auto in a kernel without ipywidgets (MLflow, for the sweep's parent run)
            warnings.filterwarnings("ignore", message="IProgress not found")
            yield
    finally:
        GlobalHydra.instance().clear()
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        for key, value in environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        for logger, kept, level, propagate in handlers:
            for handler in logger.handlers:
                if handler not in kept:
                    handler.close()  # (the run's app.log)
            logger.handlers[:] = kept
            logger.setLevel(level)
            logger.propagate = propagate
        _restore_backend(backend)
        _stop_reused_workers()


def _stop_reused_workers() -> None:
    """joblib's worker processes outlive a sweep for the next one, with the environment they started with (the
    sweep's id and folder, its MLflow parent run): the next sweep starts its own, as a new command would."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None) if loky is not None else None
    if executor is not None:
        executor.shutdown(wait=True)


def _backend_setting() -> Any:
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is None:
        return os.environ.get("MPLBACKEND")
    return dict.__getitem__(matplotlib.rcParams, "backend")  # (as set: reading it would resolve it)


def _restore_backend(before: Any) -> None:
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is None or before is None or dict.__getitem__(matplotlib.rcParams, "backend") == before:
        return
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.switch_backend(before)
    else:
        matplotlib.rcParams["backend"] = before
