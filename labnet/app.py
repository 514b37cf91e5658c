"""The Hydra task: a single run, or one job of a multirun."""

from __future__ import annotations

from omegaconf import DictConfig

from labnet.run_policy import in_multirun


def task(cfg: DictConfig) -> float:
    """The Hydra task function (``labnet.__main__`` hands it to ``hydra.main``)."""
    if not in_multirun():
        from labnet.runner import run_experiment

        return run_experiment(cfg)
    from labnet.sweeps.jobs import run_job

    return run_job(cfg)
