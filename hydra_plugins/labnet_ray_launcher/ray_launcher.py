"""``hydra/launcher=labnet_ray`` (labnet's conf/hydra/launcher/labnet_ray.yaml): hydra-ray-launcher's
launcher, and a sweep stopped with Ctrl-C or SIGTERM stops its jobs as Ctrl-C stops a run: KILLED with a
checkpoint of where they were, in MLflow too, for the re-run to resume (``labnet.sweeps.ray_stop``)."""

# (no `from __future__ import annotations`: Hydra executes this module unregistered)
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
except ImportError:  # hydra-ray-launcher not installed: `hydra/launcher=labnet_ray` says how to get it
    RayLauncher = None

if RayLauncher is not None:

    class LabnetRayLauncher(RayLauncher):
        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

            from labnet.sweeps.ray_stop import cancel_jobs, end_stopped_jobs, kept_job_refs, labnet_sigterm

            with labnet_sigterm():
                start_ray(self.ray_cfg.init)  # (the stock launch then finds Ray started)
            try:
                with kept_job_refs() as refs:
                    return super().launch(job_overrides, initial_job_idx)
            except KeyboardInterrupt:
                from labnet.tracking.syncer import ensure_syncer, pending

                sweep_dir = Path(self.config.hydra.sweep.dir)
                cancel_jobs(refs, sweep_dir)  # (each run stops at its next step, with a checkpoint of it)
                end_stopped_jobs(sweep_dir)
                workdir = Path(self.config.hydra.runtime.cwd)  # (no hook ran in the killed jobs: their runs wait here)
                if pending(workdir):
                    ensure_syncer(workdir)
                raise
