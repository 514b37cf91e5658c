"""labnet's default launcher, ``hydra/launcher=basic`` (also ``labnet_basic``): Hydra's basic launcher (jobs one
after another in this process), with each job's config composed once instead of twice
(``labnet.fused.compose_once``) and the jobs' plugins and converted data made once per launch instead of once or
twice per job (``labnet.per_launch``). Hydra's own stays available as ``hydra/launcher=hydra_basic``.
"""

# (no `from __future__ import annotations`: Hydra executes this module unregistered, and a dataclass with
# string annotations then cannot find its module)
from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class LabnetBasicLauncherConf:
    _target_: str = "hydra_plugins.labnet_basic_launcher.basic_launcher.LabnetBasicLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="labnet_basic", node=LabnetBasicLauncherConf, provider="labnet"
)


class LabnetBasicLauncher(BasicLauncher):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from labnet.fused.compose_once import compose_once

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        compose_once(hydra_context)  # (the sweeper's check of each job composes it for the launcher too)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from labnet.fused.compose_once import launching
        from labnet.per_launch import launch_scope

        with launching(self.hydra_context), launch_scope():
            return super().launch(job_overrides, initial_job_idx)


def take_basic_name() -> None:
    """``hydra/launcher=basic``, Hydra's default and so every sequential sweep's, is this launcher; Hydra's own is
    ``hydra/launcher=hydra_basic``. (An override in labnet's primary config cannot do it: Hydra keeps the primary
    config's override of a group over an experiment's own ``override /hydra/launcher: joblib``.)"""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncherConf

    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="hydra_basic", node=BasicLauncherConf, provider="hydra")
    store.store(group="hydra/launcher", name="basic", node=LabnetBasicLauncherConf, provider="labnet")
