"""Build the run's components from the composed config through the registry."""

from __future__ import annotations

from typing import Any

import numpy as np

from labnet.config import build_component, constructor_parameters
from labnet.data.base import DataSplits
from labnet.errors import ConfigError, ShapeError
from labnet.nn.model import Sequential
from labnet.plugins import Registry

MODEL_KEYS = ("hidden_sizes", "activation", "init", "use_batchnorm", "dropout", "weight_decay", "layers")


def mlp_layer_specs(
    hidden_sizes: list[int], activation: str, init: str | float, use_batchnorm: bool, dropout: float, num_classes: int
) -> list[dict[str, Any]]:
    """The book's multi-layer net: [affine, (batchnorm), activation, (dropout)] per hidden layer, then affine."""
    specs: list[dict[str, Any]] = []
    for units in hidden_sizes:
        specs.append({"type": "affine", "units": int(units), "init": init})
        if use_batchnorm:
            specs.append({"type": "batchnorm"})
        specs.append({"type": activation})
        if dropout:
            specs.append({"type": "dropout", "ratio": dropout})
    specs.append({"type": "affine", "units": num_classes, "init": init})
    return specs


def build_model(
    model_cfg: dict[str, Any], data: DataSplits, registry: Registry, rng: np.random.Generator, dtype
) -> Sequential:
    """A Sequential from ``model.layers`` (explicit specs) or the MLP options, shapes inferred."""
    unknown = sorted(set(model_cfg) - set(MODEL_KEYS) - {"name"})
    if unknown:
        raise ConfigError(f"unknown key model.{unknown[0]}; valid keys: {', '.join(MODEL_KEYS)}")
    specs = model_cfg.get("layers")
    if not specs:
        specs = mlp_layer_specs(
            list(model_cfg.get("hidden_sizes") or []),
            model_cfg.get("activation", "relu"),
            model_cfg.get("init", "he"),
            bool(model_cfg.get("use_batchnorm", False)),
            float(model_cfg.get("dropout", 0.0) or 0.0),
            data.num_classes,
        )
    layers = []
    for index, spec in enumerate(specs):
        spec = dict(spec)
        if "type" not in spec:
            raise ConfigError(f"model.layers[{index}] = {spec} has no `type`; e.g. {{type: affine, units: 50}}")
        cls = registry.get("layer", spec.pop("type"))
        if "init" not in spec and model_cfg.get("init") is not None and "init" in constructor_parameters(cls):
            spec["init"] = model_cfg["init"]  # the model's init applies to every layer that takes one
        layers.append(build_component(cls, "layer", spec, where=f"model.layers[{index}]"))
    model = Sequential(layers, weight_decay=float(model_cfg.get("weight_decay", 0.0) or 0.0))
    model.build(data.input_shape, rng, dtype)
    expected = (data.num_classes,) if data.num_classes > 2 or model.output_shape != (1,) else (1,)
    if model.output_shape != expected:
        raise ShapeError(
            f"the model's output shape {model.output_shape} does not fit the data set's {data.num_classes} "
            f"classes: the last layer should produce {(data.num_classes,)}"
        )
    return model


def model_spec(model: Sequential) -> dict[str, Any]:
    """What rebuilds ``model`` elsewhere (the MLflow pyfunc model): layer types, hyperparameters, shapes."""
    return {
        "layers": [{"type": layer.name, **layer.hyperparameters} for layer in model.layers],
        "input_shape": list(model.input_shape or ()),
        "dtype": str(model.dtype),
    }


def model_from_spec(spec: dict[str, Any], registry: Registry, state: dict[str, np.ndarray] | None = None) -> Sequential:
    """The inverse of :func:`model_spec`, with weights loaded from ``state`` when given."""
    layers = []
    for index, layer_spec in enumerate(spec["layers"]):
        options = dict(layer_spec)
        cls = registry.get("layer", options.pop("type"))
        layers.append(build_component(cls, "layer", options, where=f"layers[{index}]"))
    model = Sequential(layers).build(tuple(spec["input_shape"]), np.random.default_rng(0), spec.get("dtype", "float32"))
    if state is not None:
        model.load_state_dict(state)
    return model
