"""Building the model from the `model` config: the generated net's layers, and every bad option named by its key."""

from __future__ import annotations

import numpy as np
import pytest

from labnet.build import build_model
from labnet.data.base import DataSplits, Split
from labnet.errors import ConfigError
from labnet.plugins import Registry, get_plugin_manager

POINTS = Split(np.zeros((6, 2), np.float32), np.array([0, 1, 2, 0, 1, 2]))
DATA = DataSplits(train=POINTS, val=None, test=None, input_shape=(2,), num_classes=3)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(get_plugin_manager())


def build(registry: Registry, **model):
    return build_model(model, DATA, registry, np.random.default_rng(0), np.float32)


def test_generated_net_has_the_books_layers_in_order(registry):
    model = build(registry, hidden_sizes=[8, 4], activation="tanh", use_batchnorm=True, dropout=0.2, weight_decay=0.1)
    assert [layer.name for layer in model.layers] == [
        *("affine", "batchnorm", "tanh", "dropout"),
        *("affine", "batchnorm", "tanh", "dropout"),
        "affine",
    ]
    assert [layer.params["W"].shape for layer in model.layers if layer.name == "affine"] == [(2, 8), (8, 4), (4, 3)]
    assert model.weight_decay == 0.1
    assert model.output_shape == (3,)


def test_no_hidden_layer_is_a_single_affine(registry):
    model = build(registry, hidden_sizes=[])
    assert [layer.name for layer in model.layers] == ["affine"]


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("hidden_sizes", ["abc"], ["model.hidden_sizes=['abc']", "whole numbers >= 1", "[50]"]),
        ("hidden_sizes", 50, ["model.hidden_sizes=50", "a list"]),
        ("hidden_sizes", [50, 0], ["model.hidden_sizes=[50, 0]", ">= 1"]),
        ("hidden_sizes", [True], ["model.hidden_sizes=[True]"]),
        ("hidden_sizes", [2.5], ["model.hidden_sizes=[2.5]"]),
        ("dropout", "abc", ["model.dropout='abc'", "[0, 1)"]),
        ("dropout", 1.0, ["model.dropout=1.0", "[0, 1)"]),
        ("dropout", -0.1, ["model.dropout=-0.1", "[0, 1)"]),
        ("weight_decay", -1, ["model.weight_decay=-1.0", ">= 0"]),
        ("weight_decay", float("inf"), ["model.weight_decay=inf", ">= 0"]),
        ("weight_decay", "abc", ["model.weight_decay='abc'", ">= 0"]),
        ("use_batchnorm", "maybe", ["model.use_batchnorm='maybe'", "true or false"]),
        ("activation", 3, ["model.activation=3", "relu"]),
    ],
)
def test_bad_option_is_named_with_what_is_accepted(registry, option, value, words):
    with pytest.raises(ConfigError) as caught:
        build(registry, **{"hidden_sizes": [4], option: value})
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_weight_decay_is_checked_for_explicit_layers_too(registry):
    layers = [{"type": "affine", "units": 3}]
    with pytest.raises(ConfigError, match=r"model\.weight_decay=-0\.5"):
        build(registry, layers=layers, weight_decay=-0.5)
    assert build(registry, layers=layers, weight_decay=0.5).weight_decay == 0.5
