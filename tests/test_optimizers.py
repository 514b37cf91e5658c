"""Optimizers against the book's formulas (common/optimizer.py), worked out here element by
element in plain Python floats; weight decay, resume from state_dict, validation, in-place updates."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import labnet
from labnet.errors import ConfigError

REGISTRY = labnet.get_registry()

#: hyperparameters used for each optimizer (non-default where a default would hide a mistake)
HPARAMS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.1},
    "momentum": {"lr": 0.1, "momentum": 0.9},
    "nesterov": {"lr": 0.1, "momentum": 0.9},
    "adagrad": {"lr": 0.1},
    "rmsprop": {"lr": 0.01, "decay_rate": 0.9},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999},
}
NAMES = list(HPARAMS)

P0 = {"w": [1.0, -2.0, 0.5], "b": [0.1]}
G1 = {"w": [0.5, -1.0, 2.0], "b": [0.3]}
G2 = {"w": [-0.3, 0.4, 1.0], "b": [-0.2]}
G3 = {"w": [0.7, 0.0, -0.5], "b": [0.05]}


def make(name: str, **overrides):
    return REGISTRY.get("optimizer", name)(**{**HPARAMS[name], **overrides})


def arrays(d: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.float64) for k, v in d.items()}


def book_steps(name: str, p: float, grads: list[float]) -> list[float]:
    """One parameter element through ``len(grads)`` steps of the book's update, in Python floats."""
    hp = HPARAMS[name]
    lr = hp["lr"]
    v = h = m = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            p -= lr * g
        elif name == "momentum":
            v = hp["momentum"] * v - lr * g
            p += v
        elif name == "nesterov":  # Sutskever et al. 2013, not the book's code (see the nesterov tests)
            mo = hp["momentum"]
            p += mo * mo * v - (1 + mo) * lr * g  # v is still v_old here
            v = mo * v - lr * g
        elif name == "adagrad":
            h += g * g
            p -= lr * g / (math.sqrt(h) + 1e-7)
        elif name == "rmsprop":
            d = hp["decay_rate"]
            h *= d
            h += (1 - d) * g * g
            p -= lr * g / (math.sqrt(h) + 1e-7)
        elif name == "adam":
            b1, b2 = hp["beta1"], hp["beta2"]
            lr_t = lr * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
            m += (1 - b1) * (g - m)
            v += (1 - b2) * (g * g - v)
            p -= lr_t * m / (math.sqrt(v) + 1e-7)
        else:  # pragma: no cover
            raise AssertionError(name)
        out.append(p)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_first_two_steps_match_the_books_formulas(name):
    opt = make(name)
    params, g1, g2 = arrays(P0), arrays(G1), arrays(G2)
    opt.step(params, g1)
    after_one = {k: v.copy() for k, v in params.items()}
    opt.step(params, g2)
    for key in P0:
        expected = [book_steps(name, p, [a, b]) for p, a, b in zip(P0[key], G1[key], G2[key], strict=True)]
        np.testing.assert_allclose(after_one[key], [e[0] for e in expected], rtol=1e-12, atol=1e-15, err_msg=key)
        np.testing.assert_allclose(params[key], [e[1] for e in expected], rtol=1e-12, atol=1e-15, err_msg=key)


# the same two steps with the arithmetic done by hand (lr 0.1, momentum 0.9)
HAND = {
    "sgd": ([0.95, -1.9, 0.3], [0.98, -1.94, 0.2]),
    # v1 = -0.1 g1 = [-0.05, 0.1, -0.2]; v2 = 0.9 v1 - 0.1 g2 = [-0.015, 0.05, -0.28]
    "momentum": ([0.95, -1.9, 0.3], [0.935, -1.85, 0.02]),
    # p += 0.81 v_old - 0.19 g: v_old = 0, so p1 = p0 - 0.19 g1 = [1 - 0.095, -2 + 0.19, 0.5 - 0.38];
    # v1 = -0.1 g1 = [-0.05, 0.1, -0.2], so p2 = p1 + [-0.0405 + 0.057, 0.081 - 0.076, -0.162 - 0.19]
    "nesterov": ([0.905, -1.81, 0.12], [0.9215, -1.805, -0.232]),
    # h1 = g1² so the first step is lr * sign(g); h2 = [0.34, 1.16, 5]
    "adagrad": (
        [0.9, -1.9, 0.4],
        [0.9 + 0.03 / math.sqrt(0.34), -1.9 - 0.04 / math.sqrt(1.16), 0.4 - 0.1 / math.sqrt(5)],
    ),
}


@pytest.mark.parametrize("name", list(HAND))
def test_two_steps_worked_by_hand(name):
    opt = make(name)
    params = arrays(P0)
    opt.step(params, arrays(G1))
    np.testing.assert_allclose(params["w"], HAND[name][0], rtol=1e-6)
    opt.step(params, arrays(G2))
    np.testing.assert_allclose(params["w"], HAND[name][1], rtol=1e-6)


def test_nesterov_is_sutskevers_method_over_several_steps():
    """p += m²·v_old - (1+m)·lr·g with v = m·v_old - lr·g, per element in Python floats, over five steps
    with momentum 0.5 (where the book's m³·v_old - (1+m+m²)·lr·g differs clearly) and 0.9."""
    gradients = [[0.5, -1.0, 2.0], [-0.3, 0.4, 1.0], [0.7, 0.0, -0.5], [0.2, 0.9, -1.5], [-1.1, 0.3, 0.0]]
    for momentum, lr in ((0.5, 0.2), (0.9, 0.05)):
        opt = make("nesterov", lr=lr, momentum=momentum)
        params = {"w": np.array(P0["w"])}
        expected, velocity = list(P0["w"]), [0.0] * 3
        for g in gradients:
            opt.step(params, {"w": np.array(g)})
            for i in range(3):
                expected[i] += momentum * momentum * velocity[i] - (1 + momentum) * lr * g[i]
                velocity[i] = momentum * velocity[i] - lr * g[i]
            np.testing.assert_allclose(params["w"], expected, rtol=1e-13, atol=1e-15)


def test_nesterov_first_step_is_one_plus_m_plain_steps():
    # v_old = 0: the method moves by (1+m)·lr·g (the book's code by (1+m+m²)·lr·g, 1.43x that at m = 0.9)
    opt = make("nesterov", lr=0.1, momentum=0.9)
    params = arrays(P0)
    opt.step(params, arrays(G1))
    np.testing.assert_allclose(params["w"], np.array(P0["w"]) - 1.9 * 0.1 * np.array(G1["w"]), rtol=1e-14)


def test_adam_first_step_moves_each_element_by_about_lr():
    # t = 1: m = 0.1 g, v = 0.001 g², lr_t = lr * sqrt(0.001) / 0.1, so the step is lr * sign(g)
    opt = make("adam", lr=0.01)
    params = arrays(P0)
    opt.step(params, arrays(G1))
    np.testing.assert_allclose(params["w"], np.array(P0["w"]) - 0.01 * np.sign(G1["w"]), rtol=1e-6)


# --------------------------------------------------------------------------- weight decay


@pytest.mark.parametrize("name", NAMES)
def test_weight_decay_adds_lambda_p_to_the_gradient(name):
    lam = 0.05
    decayed, plain = make(name, weight_decay=lam), make(name)
    p_dec, p_plain = arrays(P0), arrays(P0)
    for grads in (arrays(G1), arrays(G2)):
        before = {k: g.copy() for k, g in grads.items()}
        decayed.step(p_dec, grads)
        for key in grads:
            np.testing.assert_array_equal(grads[key], before[key], err_msg="the gradient must not be modified")
        plain.step(p_plain, {k: grads[k] + lam * p_plain[k] for k in grads})
    for key in P0:
        np.testing.assert_allclose(p_dec[key], p_plain[key], rtol=1e-12, atol=1e-15)
    assert not np.allclose(p_dec["w"], _two_plain_steps(name)["w"]), "weight decay changed nothing"


def _two_plain_steps(name):
    opt, params = make(name), arrays(P0)
    opt.step(params, arrays(G1))
    opt.step(params, arrays(G2))
    return params


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_negative_or_nan_weight_decay_is_rejected(bad):
    with pytest.raises(ConfigError, match=re.escape(f"weight_decay={bad!r}")):
        make("sgd", weight_decay=bad)


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_an_identical_next_step(name, tmp_path):
    original = make(name)
    params = arrays(P0)
    original.step(params, arrays(G1))
    original.step(params, arrays(G2))
    state = original.state_dict()
    assert int(state["t"]) == 2
    np.savez(tmp_path / "optimizer.npz", **state)
    with np.load(tmp_path / "optimizer.npz", allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}

    resumed = make(name)
    resumed.load_state_dict(loaded)
    p_orig, p_resumed = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
    original.step(p_orig, arrays(G3))
    resumed.step(p_resumed, arrays(G3))
    for key in P0:
        np.testing.assert_array_equal(p_resumed[key], p_orig[key])
        expected = [
            book_steps(name, p, [a, b, c])[2] for p, a, b, c in zip(P0[key], G1[key], G2[key], G3[key], strict=True)
        ]
        np.testing.assert_allclose(p_orig[key], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["momentum", "adagrad", "adam"])
def test_a_fresh_optimizer_is_not_a_resumed_one(name):
    # guards the test above: without the state, the third step differs
    original, fresh = make(name), make(name)
    params = arrays(P0)
    original.step(params, arrays(G1))
    p_orig, p_fresh = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
    original.step(p_orig, arrays(G2))
    fresh.step(p_fresh, arrays(G2))
    assert not np.allclose(p_orig["w"], p_fresh["w"])


def test_state_dict_is_a_copy():
    opt = make("momentum")
    params = arrays(P0)
    opt.step(params, arrays(G1))
    state = opt.state_dict()
    opt.step(params, arrays(G2))
    np.testing.assert_allclose(state["v/w"], -0.1 * np.array(G1["w"]), rtol=1e-12)


def test_loading_another_optimizers_state_names_the_slots():
    adam = make("adam")
    adam.step(arrays(P0), arrays(G1))
    with pytest.raises(ConfigError) as info:
        make("momentum").load_state_dict(adam.state_dict())
    assert "'m_sum'" in str(info.value) and "'v'" in str(info.value)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", NAMES)
def test_a_zero_gradient_leaves_the_parameters_unchanged(name):
    opt, params = make(name), arrays(P0)
    opt.step(params, {k: np.zeros_like(v) for k, v in params.items()})
    for key in P0:
        np.testing.assert_array_equal(params[key], P0[key])


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("name", NAMES)
def test_a_bad_learning_rate_is_rejected_with_its_value(name, lr):
    with pytest.raises(ConfigError) as info:
        make(name, lr=lr)
    assert f"lr={lr!r}" in str(info.value)
    assert name in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_updates_are_in_place(name):
    opt = make(name)
    flat = np.array([1.0, -2.0, 0.5, 0.1])
    params = {"w": flat[:3], "b": flat[3:]}  # views into one buffer, as Sequential hands them over
    ids = {k: id(v) for k, v in params.items()}
    opt.step(params, arrays(G1))
    assert {k: id(v) for k, v in params.items()} == ids
    expected = [book_steps(name, p, [g])[0] for p, g in zip(P0["w"] + P0["b"], G1["w"] + G1["b"], strict=True)]
    np.testing.assert_allclose(flat, expected, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_float32_parameters_stay_float32(name):
    opt = make(name, weight_decay=0.01)
    params = {k: v.astype(np.float32) for k, v in arrays(P0).items()}
    for grads in (G1, G2):
        opt.step(params, {k: v.astype(np.float32) for k, v in arrays(grads).items()})
    assert all(p.dtype == np.float32 for p in params.values())
    np.testing.assert_allclose(params["w"], _two_plain_steps_decayed(name, 0.01)["w"], rtol=1e-4)


def _two_plain_steps_decayed(name, lam):
    opt, params = make(name, weight_decay=lam), arrays(P0)
    opt.step(params, arrays(G1))
    opt.step(params, arrays(G2))
    return params


def test_adam_state_is_the_books_moments_over_one_minus_beta():
    """Adam saves m_sum = m/(1-b1) and v_sum = v/(1-b2), the book's m and v after two steps."""
    opt = make("adam")
    params = arrays(P0)
    opt.step(params, arrays(G1))
    opt.step(params, arrays(G2))
    state = opt.state_dict()
    assert sorted(state) == ["m_sum/b", "m_sum/w", "t", "v_sum/b", "v_sum/w"]
    for key in P0:
        m = [0.1 * 0.9 * a + 0.1 * b for a, b in zip(G1[key], G2[key], strict=True)]
        v = [0.001 * 0.999 * a * a + 0.001 * b * b for a, b in zip(G1[key], G2[key], strict=True)]
        np.testing.assert_allclose(state[f"m_sum/{key}"] * 0.1, m, rtol=1e-12)
        np.testing.assert_allclose(state[f"v_sum/{key}"] * 0.001, v, rtol=1e-12)
