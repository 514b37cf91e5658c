"""Layers, Sequential and initialisers.

Every registered layer is gradient-checked (so a new layer cannot land without a recipe
here or a no-argument constructor); the rest checks behaviour against formulas written
out in the tests: dropout, batch norm's running statistics, shape inference and its
errors, the flat parameter buffer, checkpoints, initialiser scales and weight decay.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import labnet
from labnet.errors import ConfigError, ShapeError
from labnet.nn.gradcheck import gradcheck, gradcheck_eval
from labnet.nn.init import INITIALIZERS, init_weight
from labnet.nn.layer import Layer
from labnet.nn.layers import Affine, BatchNorm, Dropout, Identity, ReLU, Sigmoid, Tanh
from labnet.nn.model import Sequential
from labnet.plugins import get_plugin_manager, get_registry

#: constructor arguments for layers that need (or are better checked with) some
LAYER_KWARGS: dict[str, dict] = {
    "affine": {"units": 4, "init": "xavier"},
    "dropout": {"ratio": 0.5},
    "batchnorm": {"momentum": 0.9},
}

LAYERS = labnet.get_registry().list("layer")
TOL = 1e-6


def make_layer(component) -> Layer:
    kwargs = LAYER_KWARGS.get(component.name) or getattr(component.cls, "example_args", None)
    if kwargs:
        return component.cls(**kwargs)
    try:
        return component.cls()
    except TypeError as err:
        pytest.fail(
            f"layer {component.name!r} from {component.provider} has no `example_args` and cannot be "
            f"built without arguments ({err}); declare `example_args = {{...}}` on the class so it gets a "
            "gradient check"
        )


def build(layers, input_shape, *, seed=0, dtype=np.float64, weight_decay=0.0) -> Sequential:
    return Sequential(layers, weight_decay=weight_decay).build(input_shape, np.random.default_rng(seed), dtype)


# --------------------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("component", LAYERS, ids=[c.name for c in LAYERS])
def test_gradcheck_every_registered_layer(component):
    layer = make_layer(component)
    shape = tuple(component.cls.example_input_shape)
    x = np.random.default_rng(42).standard_normal((4, *shape))
    errors = gradcheck(layer, x, train=True)
    assert set(errors) == {"input", *layer.params}, "gradcheck must cover the input and every parameter"
    bad = {k: e for k, e in errors.items() if not e < TOL}
    assert not bad, f"{component.name}: relative errors above {TOL}: {bad}"


@pytest.mark.parametrize("component", LAYERS, ids=[c.name for c in LAYERS])
def test_gradcheck_every_registered_layer_in_evaluation_mode(component):
    """Backward after forward(x, train=False), following a training forward on other inputs, is the
    gradient of the evaluation function (input gradients of a trained net), not the training one's."""
    layer = make_layer(component)
    shape = tuple(component.cls.example_input_shape)
    x = np.random.default_rng(43).standard_normal((4, *shape))
    errors = gradcheck_eval(layer, x)
    assert set(errors) == {"input", *layer.params}, "gradcheck must cover the input and every parameter"
    bad = {k: e for k, e in errors.items() if not e < TOL}
    assert not bad, f"{component.name}: relative errors above {TOL} in evaluation mode: {bad}"


def test_batchnorm_backward_after_evaluation_is_the_affine_map_of_the_running_statistics():
    rng = np.random.default_rng(7)
    layer = BatchNorm(momentum=0.5, eps=1e-5)
    layer.build((3,), rng, np.float64)
    x, dout = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    layer.forward(x, train=False)  # a fresh layer: no training forward ever ran
    dx = layer.backward(dout)
    std = np.sqrt(1.0 + 1e-5)  # the initial running statistics: mean 0, variance 1
    np.testing.assert_allclose(dx, dout / std, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["gamma"], np.sum(x / std * dout, axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["beta"], dout.sum(axis=0), rtol=1e-12)
    layer.forward(rng.normal(2.0, 3.0, size=(8, 3)), train=True)
    layer.params["gamma"][...] = [0.5, -2.0, 1.5]
    rm, rv = layer.buffers["running_mean"], layer.buffers["running_var"]
    layer.forward(x, train=False)
    dx = layer.backward(dout)
    np.testing.assert_allclose(dx, layer.params["gamma"] * dout / np.sqrt(rv + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["gamma"], np.sum((x - rm) / np.sqrt(rv + 1e-5) * dout, axis=0))


def test_the_layers_with_parameters_have_them_checked():
    errors = gradcheck(Affine(3), np.random.default_rng(0).standard_normal((5, 4)))
    assert set(errors) == {"input", "W", "b"}
    errors = gradcheck(BatchNorm(), np.random.default_rng(1).standard_normal((5, 4)))
    assert set(errors) == {"input", "gamma", "beta"}


def test_batchnorm_gradcheck_on_image_shaped_input():
    x = np.random.default_rng(3).standard_normal((6, 2, 3, 3))
    errors = gradcheck(BatchNorm(momentum=0.5), x, train=True)
    assert max(errors.values()) < TOL, errors


def test_dropout_gradcheck_replays_its_random_mask():
    layer = Dropout(0.4)
    x = np.random.default_rng(5).standard_normal((8, 6))
    errors = gradcheck(layer, x, train=True)
    assert errors["input"] < TOL
    assert np.count_nonzero(layer.scale == 0) > 0, "the check must run with units actually dropped"


class _WrongReLU(ReLU):
    """ReLU whose backward forgets the mask: the gradient check has to catch it."""

    def backward(self, dout):
        return dout


def test_gradcheck_catches_a_wrong_backward():
    x = np.random.default_rng(0).standard_normal((4, 6))
    assert gradcheck(_WrongReLU(), x)["input"] > 1e-2


# --------------------------------------------------------------------------- forward behaviour


def test_activations_match_their_formulas():
    x = np.array([[-3.0, -0.5, 0.0, 0.25, 4.0]])
    for layer, expected in (
        (ReLU(), np.maximum(x, 0)),
        (Sigmoid(), 1 / (1 + np.exp(-x))),
        (Tanh(), np.tanh(x)),
        (Identity(), x),
    ):
        layer.build((5,), np.random.default_rng(0), np.float64)
        np.testing.assert_allclose(layer.forward(x.copy(), train=True), expected, rtol=1e-12)


def test_dropout_is_the_identity_at_evaluation():
    layer = Dropout(0.5)
    layer.build((50,), np.random.default_rng(0), np.float64)
    x = np.random.default_rng(1).standard_normal((20, 50))
    np.testing.assert_array_equal(layer.forward(x, train=False), x)
    np.testing.assert_array_equal(layer.backward(x), x)


def test_dropout_in_training_drops_the_ratio_and_keeps_the_mean():
    ratio = 0.3
    layer = Dropout(ratio)
    layer.build((500,), np.random.default_rng(0), np.float64)
    x = np.ones((200, 500))
    out = layer.forward(x, train=True)
    kept = 1 / (1 - ratio)
    assert np.all((out == 0) | np.isclose(out, kept)), "kept units are scaled by 1/(1-ratio)"
    assert np.mean(out == 0) == pytest.approx(ratio, abs=0.01)  # 1e5 draws: sd 0.0015
    assert out.mean() == pytest.approx(1.0, abs=0.01)  # inverted dropout keeps the expectation
    dx = layer.backward(np.full_like(x, 2.0))
    np.testing.assert_allclose(dx, 2.0 * out)  # the same units are dropped in backward
    assert not np.shares_memory(dx, x)


def test_dropout_draws_a_new_mask_each_step():
    layer = Dropout(0.5)
    layer.build((100,), np.random.default_rng(0), np.float64)
    x = np.ones((10, 100))
    first = layer.forward(x, train=True).copy()
    second = layer.forward(x, train=True)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_dropout_rejects_ratios_outside_0_1(ratio):
    with pytest.raises(ConfigError, match=re.escape(f"ratio={ratio!r}")):
        Dropout(ratio)


def test_batchnorm_train_normalises_with_batch_statistics_and_updates_running_ones():
    rng = np.random.default_rng(0)
    layer = BatchNorm(momentum=0.9, eps=1e-7)
    layer.build((3,), rng, np.float64)
    x = rng.normal(loc=[1.0, -2.0, 5.0], scale=[0.5, 2.0, 3.0], size=(64, 3))
    mu, var = x.mean(axis=0), x.var(axis=0)
    out = layer.forward(x, train=True)
    np.testing.assert_allclose(out, (x - mu) / np.sqrt(var + 1e-7), rtol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.9 * 0.0 + 0.1 * mu, rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 * 1.0 + 0.1 * var, rtol=1e-12)
    x2 = rng.normal(size=(64, 3))
    layer.forward(x2, train=True)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.9 * (0.1 * mu) + 0.1 * x2.mean(axis=0), rtol=1e-12)


def test_batchnorm_uses_running_statistics_at_evaluation():
    rng = np.random.default_rng(1)
    layer = BatchNorm(momentum=0.8, eps=1e-5)
    layer.build((4,), rng, np.float64)
    for _ in range(3):
        layer.forward(rng.normal(2.0, 3.0, size=(32, 4)), train=True)
    layer.params["gamma"][...] = [0.5, 1.0, 2.0, -1.0]
    layer.params["beta"][...] = [0.0, 1.0, -1.0, 3.0]
    rm, rv = layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy()
    x = rng.normal(size=(5, 4))
    out = layer.forward(x, train=False)
    expected = layer.params["gamma"] * (x - rm) / np.sqrt(rv + 1e-5) + layer.params["beta"]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    np.testing.assert_array_equal(layer.buffers["running_mean"], rm)  # evaluation does not update them
    np.testing.assert_array_equal(layer.buffers["running_var"], rv)
    # one sample at evaluation gives the same row as inside a batch: no batch statistics
    np.testing.assert_allclose(layer.forward(x[2:3], train=False), expected[2:3], rtol=1e-12)


def test_batchnorm_eval_matches_train_when_running_stats_are_the_batch_stats():
    rng = np.random.default_rng(2)
    layer = BatchNorm(momentum=0.0)
    layer.build((2, 3), rng, np.float64)  # any sample shape: normalised per flattened feature
    x = rng.normal(3.0, 2.0, size=(16, 2, 3))
    train_out = layer.forward(x, train=True).copy()
    assert train_out.shape == x.shape
    np.testing.assert_allclose(layer.forward(x, train=False), train_out, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- shapes


def test_affine_infers_its_input_size():
    model = build([Affine(3, init=0.1)], (7,))
    layer = model.layers[0]
    assert layer.params["W"].shape == (7, 3)
    assert layer.params["b"].shape == (3,)
    assert model.output_shape == (3,)
    x = np.random.default_rng(0).standard_normal((5, 7))
    np.testing.assert_allclose(model.forward(x), x @ layer.params["W"] + layer.params["b"], rtol=1e-12)


def test_shape_inference_through_a_stack():
    model = build([Affine(8), ReLU(), BatchNorm(), Dropout(0.2), Affine(3), Sigmoid()], (5,))
    assert model.output_shape == (3,)
    assert [layer.params["W"].shape for layer in model.layers if "W" in layer.params] == [(5, 8), (8, 3)]
    assert model.forward(np.zeros((2, 5))).shape == (2, 3)


def test_affine_on_an_image_names_layer_index_type_and_shapes():
    with pytest.raises(ShapeError) as info:
        build([Identity(), Affine(10)], (1, 28, 28))
    msg = str(info.value)
    assert "layer 1" in msg and "affine" in msg
    assert "(1, 28, 28)" in msg, msg
    assert "(features,)" in msg, msg


def test_affine_with_a_wrong_declared_input_size_names_both_sizes():
    with pytest.raises(ShapeError) as info:
        build([Identity(), Affine(3, input_size=5)], (4,))
    msg = str(info.value)
    assert "layer 1" in msg and "affine" in msg
    assert "(4,)" in msg, msg
    assert re.search(r"input_size=5\b|\(5,\)", msg), msg


def test_affine_with_the_right_declared_input_size_builds():
    assert build([Affine(3, input_size=4)], (4,)).output_shape == (3,)


def test_the_affine_error_says_how_to_flatten():
    with pytest.raises(ShapeError) as info:
        build([Affine(10)], (1, 28, 28))
    message = str(info.value)
    assert "(1, 28, 28)" in message and "flatten=true" in message
    # the suggested layer is not a built-in: the message must name where it comes from
    builtins = get_registry(get_plugin_manager(entry_points=False))
    assert "flatten" not in {c.name for c in builtins.list("layer")} and "labnet-conv" in message


def test_affine_rejects_non_positive_units():
    with pytest.raises(ConfigError, match="units=0"):
        Affine(0)


# --------------------------------------------------------------------------- flat buffers


def test_params_are_views_into_the_flat_buffer():
    model = build([Affine(4), ReLU(), BatchNorm(), Affine(2)], (3,))
    assert set(model.params) == {"0.W", "0.b", "2.gamma", "2.beta", "3.W", "3.b"}
    assert model.flat_params.size == sum(p.size for p in model.params.values()) == 3 * 4 + 4 + 4 + 4 + 4 * 2 + 2
    for key, p in model.params.items():
        index, name = key.split(".")
        assert model.layers[int(index)].params[name] is p
        assert np.shares_memory(p, model.flat_params), key
        assert np.shares_memory(model.grads[key], model.flat_grads), key
    model.flat_params[...] = 1.5
    for layer in (model.layers[0], model.layers[3]):
        np.testing.assert_array_equal(layer.params["W"], 1.5)
        np.testing.assert_array_equal(layer.params["b"], 1.5)
    model.layers[3].params["W"][1, 0] = -7.0
    assert np.count_nonzero(model.flat_params == -7.0) == 1
    # forward reads the flat buffer: 3 inputs * 1.5 + bias 1.5 = 6 per unit
    np.testing.assert_allclose(model.layers[0].forward(np.ones((1, 3))), [[6.0] * 4])


def test_the_same_seed_builds_the_same_model_bit_for_bit():
    layers = lambda: [Affine(4), BatchNorm(), Affine(2, init="xavier")]  # noqa: E731
    a, b, c = build(layers(), (3,), seed=5), build(layers(), (3,), seed=5), build(layers(), (3,), seed=6)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, c.flat_params)


def test_backward_fills_flat_grads():
    model = build([Affine(4), Tanh(), Affine(2)], (3,))
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    model.forward(x, train=True)
    model.backward(dout)
    w1, w2 = model.params["0.W"], model.params["2.W"]
    h = np.tanh(x @ w1 + model.params["0.b"])
    dh = (dout @ w2.T) * (1 - h**2)
    np.testing.assert_allclose(model.grads["2.W"], h.T @ dout, rtol=1e-10)
    np.testing.assert_allclose(model.grads["0.W"], x.T @ dh, rtol=1e-10)
    np.testing.assert_allclose(model.grads["0.b"], dh.sum(axis=0), rtol=1e-10)
    total = sum(float(np.sum(g**2)) for g in model.grads.values())
    assert float(np.sum(model.flat_grads**2)) == pytest.approx(total, rel=1e-12)


class BookAffine(Layer):
    """An affine layer written as in the book: ``backward`` binds new gradient arrays."""

    name = "book_affine"

    def __init__(self, units: int) -> None:
        super().__init__()
        self.units = units

    def build(self, input_shape, rng, dtype):
        out = super().build(input_shape, rng, dtype)
        self.params = {"W": rng.standard_normal((input_shape[0], self.units)), "b": np.zeros(self.units)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return out

    def output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x, train=True):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = self.x.T @ dout  # rebinds: a new array, not the flat view
        self.grads["b"] = np.sum(dout, axis=0)
        return dout @ self.params["W"].T


def test_a_layer_that_rebinds_its_grads_still_fills_flat_grads():
    model = build([BookAffine(3), ReLU(), BookAffine(2)], (4,))
    layer = model.layers[0]
    rng = np.random.default_rng(0)
    for _ in range(2):  # the second step must not leave the first step's gradient behind
        x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
        model.forward(x, train=True)
        model.backward(dout)
        h = np.maximum(x @ model.params["0.W"] + model.params["0.b"], 0)
        dh = (dout @ model.params["2.W"].T) * (h > 0)
        np.testing.assert_allclose(model.grads["2.W"], h.T @ dout, rtol=1e-12)
        np.testing.assert_allclose(model.grads["0.W"], x.T @ dh, rtol=1e-12)
        np.testing.assert_allclose(model.grads["0.b"], dh.sum(axis=0), rtol=1e-12)
        assert layer.grads["W"] is model.grads["0.W"], "the layer's grads are the flat views again"
        assert np.shares_memory(layer.grads["W"], model.flat_grads)


def test_an_optimizer_step_on_model_params_updates_the_layers():
    model = build([Affine(3), Affine(2)], (4,))
    before = {k: v.copy() for k, v in model.params.items()}
    model.forward(np.ones((2, 4)), train=True)
    model.backward(np.ones((2, 2)))
    opt = labnet.get_registry().get("optimizer", "sgd")(lr=0.5)
    opt.step(model.params, model.grads)
    for key, p in model.params.items():
        np.testing.assert_allclose(p, before[key] - 0.5 * model.grads[key], rtol=1e-12)
    assert model.layers[1].params["W"] is model.params["1.W"]


# --------------------------------------------------------------------------- checkpoints


def _bn_model(seed: int) -> Sequential:
    return build([Affine(4), BatchNorm(momentum=0.5), ReLU(), Affine(2)], (3,), seed=seed)


def test_state_dict_round_trip_includes_buffers(tmp_path):
    rng = np.random.default_rng(7)
    model = _bn_model(seed=0)
    for _ in range(3):
        model.forward(rng.normal(1.0, 2.0, size=(16, 3)), train=True)
    state = model.state_dict()
    assert set(state) == {"0.W", "0.b", "1.gamma", "1.beta", "1.running_mean", "1.running_var", "3.W", "3.b"}
    assert not np.allclose(state["1.running_mean"], 0.0), "the buffers moved away from their initial values"

    np.savez(tmp_path / "weights.npz", **state)
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    other = _bn_model(seed=1)
    x = rng.standard_normal((5, 3))
    assert not np.allclose(other.predict(x), model.predict(x))
    other.load_state_dict(loaded)
    for key, value in state.items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    assert np.shares_memory(other.params["0.W"], other.flat_params), "loading keeps the flat views"


def test_state_dict_is_a_copy():
    model = _bn_model(seed=0)
    state = model.state_dict()
    model.flat_params[...] = 0.0
    model.layers[1].buffers["running_mean"][...] = 9.0
    assert not np.allclose(state["0.W"], 0.0)
    np.testing.assert_array_equal(state["1.running_mean"], 0.0)


def test_load_state_dict_rejects_missing_and_unexpected_keys():
    model = _bn_model(seed=0)
    state = model.state_dict()
    del state["1.running_var"]
    state["5.W"] = np.zeros((2, 2))
    with pytest.raises(ShapeError) as info:
        model.load_state_dict(state)
    assert "1.running_var" in str(info.value) and "5.W" in str(info.value)


def test_load_state_dict_rejects_a_wrong_shape():
    small = build([Affine(4), BatchNorm(momentum=0.5), ReLU(), Affine(2)], (3,))
    big = build([Affine(5), BatchNorm(momentum=0.5), ReLU(), Affine(2)], (3,))
    with pytest.raises(ShapeError) as info:
        small.load_state_dict(big.state_dict())
    msg = str(info.value)
    assert "0.W" in msg and "(3, 5)" in msg and "(3, 4)" in msg, msg


# --------------------------------------------------------------------------- initialisers

SHAPE = (2000, 500)  # 1e6 draws: the sample std is within ~0.1 % of the true one


@pytest.mark.parametrize(
    ("init", "expected_std"),
    [
        ("std", 0.01),
        ("xavier", np.sqrt(1 / 2000)),
        ("sigmoid", np.sqrt(1 / 2000)),
        ("he", np.sqrt(2 / 2000)),
        ("relu", np.sqrt(2 / 2000)),
        (0.3, 0.3),
    ],
)
def test_init_scales(init, expected_std):
    w = init_weight(SHAPE, init, np.random.default_rng(0), np.float64)
    assert w.shape == SHAPE
    assert w.std() == pytest.approx(expected_std, rel=0.01)
    assert abs(w.mean()) < 5 * expected_std / np.sqrt(w.size)


def test_conv_filter_fan_in_is_channels_times_kernel():
    w = init_weight((64, 3, 5, 5), "he", np.random.default_rng(0), np.float64)
    assert w.std() == pytest.approx(np.sqrt(2 / (3 * 5 * 5)), rel=0.02)


def test_affine_uses_its_init():
    model = build([Affine(1000, init="xavier")], (400,))
    assert model.params["0.W"].std() == pytest.approx(np.sqrt(1 / 400), rel=0.01)
    assert model.params["0.W"].dtype == np.float64
    assert build([Affine(10)], (4,), dtype=np.float32).params["0.W"].dtype == np.float32


def test_unknown_init_names_the_accepted_ones():
    with pytest.raises(ConfigError) as info:
        init_weight((3, 3), "glorot", np.random.default_rng(0))
    msg = str(info.value)
    assert "'glorot'" in msg
    for name in ("std", "xavier", "he"):
        assert re.search(rf"\b{name}\b", msg), f"{name!r} missing from: {msg}"
    assert set(INITIALIZERS) >= {"std", "xavier", "he"}
    with pytest.raises(ConfigError, match="glorot"):
        build([Affine(3, init="glorot")], (4,))


@pytest.mark.parametrize("init", [0, -0.1])
def test_non_positive_numeric_init_is_rejected(init):
    with pytest.raises(ConfigError, match=re.escape(f"init={init!r}")):
        init_weight((3, 3), init, np.random.default_rng(0))


# --------------------------------------------------------------------------- weight decay


def _decay_pair(lam: float):
    layers = lambda: [Affine(5), BatchNorm(), ReLU(), Affine(3)]  # noqa: E731
    return build(layers(), (4,), seed=3), build(layers(), (4,), seed=3, weight_decay=lam)


def test_weight_decay_adds_lambda_w_to_weight_gradients_only():
    lam = 0.1
    plain, decayed = _decay_pair(lam)
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((8, 4)), rng.standard_normal((8, 3))
    for model in (plain, decayed):
        model.forward(x, train=True)
        model.backward(dout)
    for key in ("0.W", "3.W"):
        np.testing.assert_allclose(decayed.grads[key], plain.grads[key] + lam * decayed.params[key], rtol=1e-12)
    for key in ("0.b", "3.b", "1.gamma", "1.beta"):
        np.testing.assert_array_equal(decayed.grads[key], plain.grads[key])


def test_regularization_loss_is_half_lambda_sum_of_squared_weights():
    lam = 0.25
    plain, decayed = _decay_pair(lam)
    decayed.params["0.b"][...] = 3.0  # biases and batch-norm scales are not penalised
    decayed.params["1.gamma"][...] = 2.0
    w1, w2 = decayed.layers[0].params["W"], decayed.layers[3].params["W"]
    expected = 0.5 * lam * (np.sum(w1**2) + np.sum(w2**2))
    assert decayed.regularization_loss() == pytest.approx(expected, rel=1e-12)
    assert plain.regularization_loss() == 0.0


def test_model_forward_trains_by_default_like_its_layers():
    """A hand loop calling model.forward(x) then backward trains: dropout drops, predict() does not."""
    model = build([Dropout(ratio=0.5)], (1000,))
    x = np.ones((4, 1000))
    assert (model.forward(x) == 0).mean() == pytest.approx(0.5, abs=0.05)
    np.testing.assert_array_equal(model.predict(x), model.forward(x, train=False))
    assert not (model.predict(x) == 0).any()
