"""Build the run's components from the composed config through the registry."""

from __future__ import annotations

from typing import Any

import numpy as np

from labnet.config import MLP_ONLY_KEYS, build_component, check_flag, constructor_parameters
from labnet.data.base import DataSplits
from labnet.errors import ConfigError, ShapeError
from labnet.memory import check_model_fits, largest_batches
from labnet.nn.model import Sequential
from labnet.plugins import Registry
from labnet.train.health import is_activation
from labnet.train.trainer import TrainerConfig

MODEL_KEYS = (*MLP_ONLY_KEYS, "init", "weight_decay", "layers")


def mlp_layer_specs(
    hidden_sizes: list[int],
    activation: str | dict[str, Any],
    init: str | float,
    use_batchnorm: bool,
    dropout: float,
    num_classes: int,
) -> list[tuple[str, dict[str, Any]]]:
    """The book's multi-layer net: [affine, (batchnorm), activation, (dropout)] per hidden layer, then affine;
    each spec with the config option it comes from (what an error about the layer names).

    ``activation`` is a layer name (``relu``, a plugin's ``leaky_relu``) or a layer spec with its options
    (``{type: leaky_relu, negative_slope: 0.2}``).
    """
    activation_spec = dict(activation) if isinstance(activation, dict) else {"type": activation}
    specs: list[tuple[str, dict[str, Any]]] = []
    origin = "the output layer"
    for index, units in enumerate(hidden_sizes):
        origin = f"model.hidden_sizes[{index}]={units}"  # the output layer's size follows the last one
        specs.append((origin, {"type": "affine", "units": units, "init": init}))
        if use_batchnorm:
            specs.append((origin, {"type": "batchnorm"}))
        specs.append((origin, dict(activation_spec)))
        if dropout:
            specs.append((origin, {"type": "dropout", "ratio": dropout}))
    specs.append((origin, {"type": "affine", "units": num_classes, "init": init}))
    return specs


def build_model(
    model_cfg: dict[str, Any],
    data: DataSplits,
    registry: Registry,
    rng: np.random.Generator,
    dtype,
    trainer: TrainerConfig | None = None,
) -> Sequential:
    """A Sequential from ``model.layers`` (explicit specs) or the MLP options, shapes inferred; refused by the
    options that ask for it when it would not fit in memory (with ``trainer``'s batches when given)."""
    unknown = sorted(set(model_cfg) - set(MODEL_KEYS) - {"name"})
    if unknown:
        raise ConfigError(f"unknown key model.{unknown[0]}; valid keys: {', '.join(MODEL_KEYS)}")
    accepted = "a number >= 0, the L2 penalty's lambda; 0 for none"
    weight_decay = _number(model_cfg, "weight_decay", accepted)
    if weight_decay < 0:
        raise ConfigError(f"model.weight_decay={weight_decay!r}: must be {accepted}")
    if model_cfg.get("layers"):
        specs = [(f"model.layers[{index}]", spec) for index, spec in enumerate(model_cfg["layers"])]
    else:
        options = _mlp_options(model_cfg, registry)
        _check_activation(options["activation"], registry)
        specs = mlp_layer_specs(**options, num_classes=data.num_classes)
    layers = []
    for index, (_, spec) in enumerate(specs):
        spec = dict(spec)
        if "type" not in spec:
            raise ConfigError(f"model.layers[{index}] = {spec} has no `type`; e.g. {{type: affine, units: 50}}")
        cls = registry.get("layer", spec.pop("type"))
        if "init" not in spec and model_cfg.get("init") is not None and "init" in constructor_parameters(cls):
            spec["init"] = model_cfg["init"]  # the model's init applies to every layer that takes one
        layers.append(build_component(cls, "layer", spec, where=f"model.layers[{index}]"))
    batches = largest_batches(data, trainer.batch_size, trainer.eval_batch_size) if trainer else None
    check_model_fits(layers, [origin for origin, _ in specs], data.input_shape, dtype, batches)
    model = Sequential(layers, weight_decay=weight_decay)
    model.build(data.input_shape, rng, dtype)
    expected = (data.num_classes,) if data.num_classes > 2 or model.output_shape != (1,) else (1,)
    if model.output_shape != expected:
        raise ShapeError(
            f"the model's output shape {model.output_shape} does not fit the data set's {data.num_classes} "
            f"classes: the last layer should produce {(data.num_classes,)}"
        )
    return model


def _number(model_cfg: dict[str, Any], key: str, accepted: str) -> float:
    value = model_cfg.get(key) or 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ConfigError(f"model.{key}={value!r}: must be {accepted}")
    return float(value)


def _mlp_options(model_cfg: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """The generated net's options, checked here so that a bad one is named as the ``model.`` key it came from."""
    hidden = model_cfg.get("hidden_sizes") or []
    whole = lambda units: isinstance(units, int) and not isinstance(units, bool) and units >= 1  # noqa: E731
    if not isinstance(hidden, list | tuple) or not all(whole(units) for units in hidden):
        raise ConfigError(
            f"model.hidden_sizes={hidden!r}: must be a list of whole numbers >= 1, the units of each hidden layer "
            "(e.g. [50] or [100,100]; [] for none)"
        )
    use_batchnorm = check_flag("model.use_batchnorm", model_cfg.get("use_batchnorm", False))
    accepted = "a number in [0, 1), the share of hidden units dropped; 0 for none"
    dropout = _number(model_cfg, "dropout", accepted)
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout={dropout!r}: must be {accepted}")
    activation = model_cfg.get("activation", "relu")
    kind = activation if isinstance(activation, str) else (activation or {}).get("type") if isinstance(
        activation, dict
    ) else None
    if not isinstance(kind, str):
        raise ConfigError(
            f"model.activation={activation!r}: must be a layer name such as relu, sigmoid or tanh, or a layer "
            "with options such as {type: leaky_relu, negative_slope: 0.2}"
        )
    activations = [c.name for c in registry.list("layer") if is_activation(c.cls)]
    if kind not in activations:
        known = kind in {c.name for c in registry.list("layer")}
        raise ConfigError(
            f"model.activation={kind!r}: "
            + ("that layer is not an activation" if known else "no such activation is installed")
            + f"; available: {', '.join(activations) or 'none'} (a plugin's layer counts as one with "
            "`is_activation = True`; model.layers builds a net of any layers)"
        )
    return {
        "hidden_sizes": list(hidden),
        "activation": activation,
        "init": model_cfg.get("init", "he"),
        "use_batchnorm": use_batchnorm,
        "dropout": dropout,
    }


def _check_activation(activation: str | dict[str, Any], registry: Registry) -> None:
    """Build the activation once so that a bad name or option is named as ``model.activation...``."""
    options = dict(activation) if isinstance(activation, dict) else {"type": activation}
    cls = registry.get("layer", options.pop("type"))
    build_component(cls, "layer", options, where="model.activation")


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
