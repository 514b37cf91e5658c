"""The plugin through labnet's plugin manager: its components and its lifecycle hook."""

from __future__ import annotations

import warnings
from importlib import metadata
from types import SimpleNamespace

import numpy as np
import pytest
from labnet.plugins import ENTRY_POINT_GROUP, Registry, get_plugin_manager
from labnet.testing import HookRecorder, assert_plugin_passes_checks, fresh_manager

import labnet_example.plugin
from labnet_example.plugin import GradientExplosionWarning


def test_registers_one_of_each():
    registry = Registry(fresh_manager(labnet_example.plugin))
    ours = {(c.kind, c.name) for c in registry.list() if c.provider.dist == "labnet-example"}
    assert ours == {("layer", "swish"), ("optimizer", "adamw"), ("dataset", "moons")}


def test_discovered_through_its_entry_point_once_installed():
    try:
        dist = metadata.distribution("labnet-example")
    except metadata.PackageNotFoundError:
        pytest.skip("labnet-example is not installed: pip install --no-deps -e plugins/labnet-example")
    others = [e.name for e in metadata.entry_points(group=ENTRY_POINT_GROUP) if e.dist.name != "labnet-example"]
    registry = Registry(get_plugin_manager(block=others))
    assert registry.component("optimizer", "adamw").provider.dist == "labnet-example"
    assert registry.component("layer", "swish").provider.version == dist.version


def fake_model(norm: float):
    grads = np.zeros(100, np.float32)
    grads[0] = norm
    return SimpleNamespace(flat_grads=grads)


def test_passes_labnet_plugins_check():
    assert_plugin_passes_checks(labnet_example.plugin)


@pytest.fixture
def manager():
    """Only this plugin: the built-in lifecycle plugins (tracker, ...) would need a real run."""
    return fresh_manager(labnet_example.plugin, builtins=False)


def test_epoch_end_warns_on_an_exploding_gradient(manager):
    with pytest.warns(GradientExplosionWarning, match=r"epoch 3: gradient norm 1e\+05 is above 1000"):
        manager.hook.labnet_epoch_end(run=None, epoch=3, metrics={}, model=fake_model(1e5), optimizer=None)
    with pytest.warns(GradientExplosionWarning, match="nan"):
        manager.hook.labnet_epoch_end(run=None, epoch=4, metrics={}, model=fake_model(np.nan), optimizer=None)


def test_epoch_end_is_quiet_on_a_normal_gradient(manager):
    with warnings.catch_warnings(), HookRecorder(manager) as recorder:
        warnings.simplefilter("error")
        manager.hook.labnet_epoch_end(run=None, epoch=1, metrics={}, model=fake_model(3.0), optimizer=None)
    (call,) = recorder.calls
    assert call.plugins == ["example"] and call.results == []  # pluggy leaves out None results
