"""A plugin layer as the generated MLP's activation, with its options (``model.activation={type: NAME, opt: v}``),
and the MLP-only model keys left out of a run's params when ``model.layers`` replaces them."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import labnet
from labnet.build import build_model
from labnet.config import config_dirs, flatten_config
from labnet.data.base import DataSplits, Split
from labnet.errors import ConfigError
from labnet.nn.layer import Layer
from labnet.plugins import Provider, Registry, get_plugin_manager

DATA = DataSplits(
    train=Split(np.zeros((6, 2), np.float32), np.arange(6) % 3), val=None, test=None, input_shape=(2,), num_classes=3
)


class Leaky(Layer):
    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x, train=True):
        self.slope = np.where(x > 0, 1.0, self.negative_slope).astype(x.dtype)
        return x * self.slope

    def backward(self, dout):
        return dout * self.slope


class Plugin:
    @labnet.hookimpl
    def labnet_layers(self):
        return [Leaky]


@pytest.fixture(scope="module")
def registry() -> Registry:
    manager = get_plugin_manager(entry_points=False)
    manager.register(Plugin(), "leaky", Provider("leaky", "labnet-leaky", "1.0"))
    return Registry(manager)


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dirs()[0]), version_base=None):
        return compose("config", overrides=list(overrides))


def build(registry, model_cfg):
    return build_model(model_cfg, DATA, registry, np.random.default_rng(0), np.float32)


def test_activation_with_options_from_the_command_line(registry):
    cfg = composed("model.hidden_sizes=[4,4]", "model.activation={type: leaky_relu, negative_slope: 0.2}")
    model = build(registry, OmegaConf.to_container(cfg.model, resolve=True))
    leaky = [layer for layer in model.layers if layer.name == "leaky_relu"]
    assert [layer.negative_slope for layer in leaky] == [0.2, 0.2] and leaky[0] is not leaky[1]
    assert flatten_config(cfg)["model.activation.negative_slope"] == 0.2


def test_activation_by_plain_name(registry):
    cfg = composed("model.hidden_sizes=[4]", "model.activation=leaky_relu")
    model = build(registry, OmegaConf.to_container(cfg.model, resolve=True))
    assert [layer.name for layer in model.layers] == ["affine", "leaky_relu", "affine"]
    assert model.layers[1].negative_slope == 0.01


def test_a_bad_activation_option_is_named_as_model_activation(registry):
    with pytest.raises(ConfigError, match=r"unknown key model\.activation\.negative_slop for layer 'leaky_relu'"):
        build(registry, {"hidden_sizes": [4], "activation": {"type": "leaky_relu", "negative_slop": 0.2}})
    with pytest.raises(ConfigError, match=r"model\.activation=\{'negative_slope': 0\.2\}: must be a layer name"):
        build(registry, {"hidden_sizes": [4], "activation": {"negative_slope": 0.2}})
    with pytest.raises(ConfigError, match="model.activation='leaky': no such activation is installed; .*leaky_relu"):
        build(registry, {"hidden_sizes": [4], "activation": "leaky"})


def test_mlp_only_keys_are_not_params_when_layers_replace_them():
    layers = "model.layers=[{type: affine, units: 5}, {type: relu}, {type: affine, units: 3}]"
    with_layers = flatten_config(composed(layers, "model.activation=tanh"))
    assert not {"model.hidden_sizes", "model.activation", "model.use_batchnorm", "model.dropout"} & set(with_layers)
    assert {"model.layers", "model.init", "model.weight_decay", "optimizer.lr"} <= set(with_layers)
    generated = flatten_config(composed("model.activation=tanh"))
    assert generated["model.activation"] == "tanh" and "model.hidden_sizes" in generated
