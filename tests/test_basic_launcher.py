"""labnet's default launcher (hydra_plugins/labnet_basic_launcher): Hydra's basic launcher, with each job's
config composed once (not once for the sweeper's check and again for the launch) and the jobs' plugins loaded
once per plugin set; ``hydra/launcher=basic`` is still Hydra's own. Sequential sweeps' behaviour (skip,
resume, exit codes, summary, Optuna, replicates) is tested in test_sweeps.py, test_faults.py and others, all
of which now run through this launcher."""

from __future__ import annotations

import json

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl

import labnet.plugins
import labnet.run_policy

GRID = ("-m", "dataset=spiral", "optimizer.lr=0.01,0.02,0.03", "trainer.epochs=1", "tracking=none")


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


def test_the_default_launcher_composes_each_job_once_and_loads_the_plugins_once(tmp_path, cli_in_process, counted):
    proc = cli_in_process(tmp_path, *GRID)
    assert proc.returncode == 0, proc.stderr
    assert "3 jobs; 3 trained" in proc.stdout
    assert lrs_of(tmp_path) == [0.01, 0.02, 0.03]
    assert counted["composed"] == 3
    assert counted["managers"] == 2  # (the sweep's callback, before the launch; then one for the 3 jobs)


def test_hydra_basic_launcher_is_still_hydras_own(tmp_path, cli_in_process, counted):
    proc = cli_in_process(tmp_path, *GRID, "hydra/launcher=basic")
    assert proc.returncode == 0, proc.stderr
    assert lrs_of(tmp_path) == [0.01, 0.02, 0.03]
    assert counted["composed"] == 6  # (the sweeper's check, then the launch)
    assert counted["managers"] == 1 + 2 * 3  # (the callback; each job's identity and its run)


def test_plugins_are_shared_only_inside_a_launch(tmp_path, cli_in_process):
    """One manager per plugin set inside; fresh ones again after the sweep (a plugin registered in between,
    or installed, is seen by the next run)."""
    import labnet.plugin_sharing as sharing

    with sharing.plugins_shared():
        assert sharing.shared_manager(["b", "a"], object) is sharing.shared_manager(["a", "b", "a"], object)
        assert sharing.shared_manager(["a"], object) is not sharing.shared_manager(["b"], object)
    assert sharing.shared_manager(["a"], object) is not sharing.shared_manager(["a"], object)
    proc = cli_in_process(tmp_path, *GRID)
    assert proc.returncode == 0, proc.stderr
    assert sharing._shared is None
