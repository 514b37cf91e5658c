"""``hydra/launcher=labnet_fused``: a sweep's jobs that differ only in fusible keys (optimizer, its settings,
seed, init, dropout, weight decay) trained as one stacked model in the launching process, each recorded as a
run of its own; every other job runs as with Hydra's basic launcher. The work is in ``labnet.fused.launch``;
``hydra.launcher.n_jobs`` spreads the groups and the jobs alone over worker processes (``labnet.fused.workers``).
"""

# (no `from __future__ import annotations`: Hydra executes this module unregistered, and a dataclass with
# string annotations then cannot find its module)
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class LabnetFusedLauncherConf:
    _target_: str = "hydra_plugins.labnet_fused_launcher.fused_launcher.LabnetFusedLauncher"
    # a group's members trained as this many stacked models side by side, one thread each (null: one per core)
    stacks: Optional[int] = None  # noqa: UP045 (Hydra reads the annotation at run time; see above)
    # worker processes running groups (and jobs alone) at once, one each at a time (null or 1: in this process;
    # -1: one per core, as joblib counts). Any: labnet checks the value and says what it accepts
    n_jobs: Any = None


ConfigStore.instance().store(
    group="hydra/launcher", name="labnet_fused", node=LabnetFusedLauncherConf, provider="labnet"
)


class LabnetFusedLauncher(Launcher):
    def __init__(self, stacks: Optional[int] = None, n_jobs: Any = None) -> None:  # noqa: UP045
        self.stacks, self.n_jobs = stacks, n_jobs  # (read from the config: labnet.fused.launch)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from labnet.fused.compose_once import compose_once
        from labnet.fused.workers import worker_limit

        worker_limit(self.n_jobs)  # (a mistake stops the sweep before any job is composed)
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context
        compose_once(hydra_context)  # (the sweeper's check of each job composes it for the launcher too)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from labnet.fused.compose_once import launching
        from labnet.fused.launch import launch
        from labnet.per_launch import launch_scope

        with launching(self.hydra_context), launch_scope():
            return launch(self, job_overrides, initial_job_idx)
