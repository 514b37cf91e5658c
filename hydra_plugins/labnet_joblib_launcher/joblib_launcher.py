"""``hydra/launcher=joblib`` as labnet runs it: hydra-joblib-launcher's options and job set-up, but each job
in a worker process watched on its own (``labnet.sweeps.workers``), so a killed worker fails only its job.

``take_joblib_name`` puts this launcher's schema (the stock one, this launcher as its target) in Hydra's
config store under the stock name, ``hydra/launcher/joblib``: the command users know gets it. labnet's
search path plugin calls it, because Hydra calls search path plugins after it has imported every plugin
module (the stock one registers the name on import), before it composes a config: a deterministic order.
(A YAML file of that name in labnet's conf/ would not do: Hydra validates it against the stock schema.)
"""

# (no `from __future__ import annotations`: Hydra executes this module unregistered, and a dataclass with
# string annotations then cannot find its module)
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn

try:
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
except ImportError:  # hydra-joblib-launcher not installed: `hydra/launcher=joblib` says how to get it
    JoblibLauncher = None

log = logging.getLogger(__name__)

if JoblibLauncher is not None:

    @dataclass
    class LabnetJoblibLauncherConf(JobLibLauncherConf):
        _target_: str = "hydra_plugins.labnet_joblib_launcher.joblib_launcher.LabnetJoblibLauncher"

    class LabnetJoblibLauncher(JoblibLauncher):
        """Runs ``n_jobs`` jobs at a time (joblib's count: -1 all cores, -2 all but one); joblib's other
        options (backend, batch_size, pre_dispatch, ...) tune loky's pool, which this launcher does not use."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            from hydra.core.singleton import Singleton
            from hydra.core.utils import configure_log, filter_overrides, setup_globals
            from hydra_plugins.hydra_joblib_launcher._core import execute_job
            from joblib import effective_n_jobs

            from labnet.sweeps.workers import run_jobs, worker_env

            setup_globals()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            n_jobs = max(1, min(effective_n_jobs(self.joblib.get("n_jobs", -1)), len(job_overrides)))
            log.info(f"joblib launcher (labnet's workers) is launching {len(job_overrides)} jobs, {n_jobs} at a time")
            for idx, overrides in enumerate(job_overrides):
                log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
            shared = (self.hydra_context, self.config, self.task_function, Singleton.get_state())
            return run_jobs(job_overrides, initial_job_idx, n_jobs, execute_job, shared, worker_env(n_jobs))


def take_joblib_name() -> None:
    """``hydra/launcher=joblib`` is this launcher, where the stock one is installed."""
    if JoblibLauncher is not None:
        ConfigStore.instance().store(
            group="hydra/launcher", name="joblib", node=LabnetJoblibLauncherConf, provider="labnet"
        )
