"""``hydra/launcher=labnet_basic`` (hydra_plugins/labnet_basic_launcher): Hydra's basic launcher, with each job's
config composed once (not once for the sweeper's check and again for the launch) and the jobs' plugins loaded
once per plugin set. It is the default (Hydra's name ``basic``); Hydra's own is ``hydra/launcher=hydra_basic``."""

from __future__ import annotations

import json

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl

import labnet.plugins
import labnet.run_policy

GRID = ("-m", "dataset=spiral", "optimizer.lr=0.01,0.02,0.03", "trainer.epochs=1", "tracking=none")
LABNET_BASIC = "hydra/launcher=labnet_basic"


@pytest.fixture
def counted(monkeypatch):
    """How many times jobs' configs were composed and plugin managers created."""
    counts = {"composed": 0, "managers": 0}
    compose, make = ConfigLoaderImpl.load_sweep_config, labnet.plugins.get_plugin_manager

    def load_sweep_config(self, *args, **kwargs):
        counts["composed"] += 1
        return compose(self, *args, **kwargs)

    def get_plugin_manager(*args, **kwargs):
        counts["managers"] += 1
        return make(*args, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", load_sweep_config)
    monkeypatch.setattr(labnet.run_policy, "get_plugin_manager", get_plugin_manager)
    return counts


def lrs_of(cwd) -> list[float]:
    results = [json.loads(p.read_text()) for p in sorted(cwd.glob("multirun/*/*/*/result.json"))]
    assert all(r["status"] == "FINISHED" for r in results)
    return sorted(r["params"]["optimizer.lr"] for r in results)


def test_labnet_basic_composes_each_job_once_and_loads_the_plugins_once(tmp_path, cli_in_process, counted):
    proc = cli_in_process(tmp_path, *GRID, LABNET_BASIC)
    assert proc.returncode == 0, proc.stderr
    assert "3 jobs; 3 trained" in proc.stdout
    assert lrs_of(tmp_path) == [0.01, 0.02, 0.03]
    assert counted["composed"] == 3
    assert counted["managers"] == 2  # (the sweep's callback, before the launch; then one for the 3 jobs)


def test_the_default_launcher_is_labnets_and_composes_each_job_once(tmp_path, cli_in_process, counted):
    proc = cli_in_process(tmp_path, *GRID)  # (no launcher named: Hydra's default, `basic`)
    assert proc.returncode == 0, proc.stderr
    assert "3 jobs; 3 trained" in proc.stdout
    assert lrs_of(tmp_path) == [0.01, 0.02, 0.03]
    assert counted["composed"] == 3
    assert counted["managers"] == 2


def test_hydras_own_basic_launcher_is_hydra_basic(tmp_path, cli_in_process, counted):
    proc = cli_in_process(tmp_path, *GRID, "hydra/launcher=hydra_basic")
    assert proc.returncode == 0, proc.stderr
    assert lrs_of(tmp_path) == [0.01, 0.02, 0.03]
    assert counted["composed"] == 6  # (the sweeper's check, then the launch)
    assert counted["managers"] == 1 + 2 * 3  # (the callback; each job's identity and its run)


def test_plugins_are_shared_only_inside_a_launch(tmp_path, cli_in_process):
    """One manager per plugin set inside; fresh ones again after the sweep (a plugin registered in between,
    or installed, is seen by the next run)."""
    import labnet.per_launch as per_launch

    with per_launch.launch_scope():
        assert per_launch.once_per_launch("k", "a", object) is per_launch.once_per_launch("k", "a", object)
        assert per_launch.once_per_launch("k", "a", object) is not per_launch.once_per_launch("k", "b", object)
        kept = per_launch.once_per_launch("big", 1, object, keep=1)
        per_launch.once_per_launch("big", 2, object, keep=1)
        assert per_launch.once_per_launch("big", 1, object, keep=1) is not kept  # (keep=1: 2 pushed it out)
    assert per_launch.once_per_launch("k", "a", object) is not per_launch.once_per_launch("k", "a", object)
    proc = cli_in_process(tmp_path, *GRID, LABNET_BASIC)
    assert proc.returncode == 0, proc.stderr
    assert per_launch._kept is None
