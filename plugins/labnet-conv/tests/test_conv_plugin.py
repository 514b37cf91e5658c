"""The plugin as labnet sees it: entry point, registry, shipped Hydra configs."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from labnet.nn.model import Sequential
from labnet.plugins import ENTRY_POINT_GROUP, Registry, get_plugin_manager
from labnet.testing import assert_plugin_passes_checks, fresh_manager
from omegaconf import OmegaConf

import labnet_conv.plugin
from labnet_conv.layers import CONV_LAYERS

LAYER_NAMES = {"conv2d", "max_pool2d", "avg_pool2d", "flatten"}


@pytest.fixture
def manager():
    """A fresh manager with the built-ins and this plugin only (registered as its entry point would be)."""
    return fresh_manager(labnet_conv.plugin)


def test_passes_labnet_plugins_check():
    assert_plugin_passes_checks(labnet_conv.plugin)


def test_discovered_through_its_entry_point_once_installed():
    try:
        dist = metadata.distribution("labnet-conv")
    except metadata.PackageNotFoundError:
        pytest.skip("labnet-conv is not installed: pip install --no-deps -e plugins/labnet-conv")
    (ep,) = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    assert (ep.name, ep.value) == ("conv", "labnet_conv.plugin")
    # load every entry point of the environment except other plugins, which may be broken on purpose
    others = [e.name for e in metadata.entry_points(group=ENTRY_POINT_GROUP) if e.dist.name != "labnet-conv"]
    manager = get_plugin_manager(block=others)
    assert not [b for b in manager.broken if b.provider.dist == "labnet-conv"]
    registry = Registry(manager)
    for name in LAYER_NAMES:
        component = registry.component("layer", name)
        assert component.provider.dist == "labnet-conv", component
    assert registry.get("layer", "conv2d") is labnet_conv.Conv2D
    assert f"labnet-conv=={dist.version}" in manager.distributions()


def test_registers_every_layer(manager):
    registry = Registry(manager)
    assert {c.name for c in registry.list("layer") if c.provider.dist == "labnet-conv"} == LAYER_NAMES
    assert [registry.get("layer", cls.name) for cls in CONV_LAYERS] == CONV_LAYERS


def test_config_dir_hook_returns_the_shipped_folder(manager):
    dirs = [d for result in manager.hook.labnet_config_dirs() for d in result]
    assert str(labnet_conv.plugin.CONFIG_DIR) in dirs
    folder = Path(labnet_conv.plugin.CONFIG_DIR)
    assert folder.is_absolute() and folder.is_dir()
    assert (folder / "model" / "simple_convnet.yaml").is_file()
    assert (folder / "experiment" / "mnist_convnet.yaml").is_file()


def test_simple_convnet_config_builds_the_books_network(manager):
    cfg = OmegaConf.load(Path(labnet_conv.plugin.CONFIG_DIR) / "model" / "simple_convnet.yaml")
    assert set(cfg) == {"hidden_sizes", "activation", "init", "use_batchnorm", "dropout", "weight_decay", "layers"}
    registry = Registry(manager)
    layers = []
    for spec in OmegaConf.to_container(cfg.layers):
        kind = spec.pop("type")
        layers.append(registry.get("layer", kind)(**spec))
    model = Sequential(layers).build((1, 28, 28), np.random.default_rng(0))
    assert model.output_shape == (10,)
    assert [type(layer).name for layer in model.layers] == [
        "conv2d",
        "relu",
        "max_pool2d",
        "flatten",
        "affine",
        "relu",
        "affine",
    ]
    assert model.num_params == (30 * 25 + 30) + (30 * 12 * 12 * 100 + 100) + (100 * 10 + 10)


def test_mnist_convnet_experiment():
    path = Path(labnet_conv.plugin.CONFIG_DIR) / "experiment" / "mnist_convnet.yaml"
    assert path.read_text().startswith("# @package _global_\n")
    cfg = OmegaConf.load(path)
    assert list(cfg.defaults) == [
        {"override /dataset": "mnist"},
        {"override /model": "simple_convnet"},
        {"override /optimizer": "adam"},
    ]
    assert cfg.dataset.flatten is False
    assert cfg.optimizer.lr == 0.001
    assert cfg.trainer.batch_size == 100 and cfg.trainer.epochs >= 1
