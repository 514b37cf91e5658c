"""AdamW: the first two steps against values worked out by hand, five steps against a per-element reference
(labnet.testing), decoupled decay, state_dict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from labnet.errors import ConfigError
from labnet.testing import check_optimizer_steps

from labnet_example.optimizers import AdamW


def test_first_two_steps_match_hand_computed_values():
    # lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.5; p=1, gradients 0.5 then -0.25
    opt = AdamW(lr=0.1, weight_decay=0.5)
    p = np.array([1.0])
    # step 1: decay p = 1 * (1 - 0.1*0.5) = 0.95; m = 0.1*0.5 = 0.05; v = 0.001*0.25 = 0.00025
    #         m^ = 0.05/0.1 = 0.5; v^ = 0.00025/0.001 = 0.25; p = 0.95 - 0.1 * 0.5/(0.5 + 1e-8) = 0.85 + 2e-9
    opt.step({"w": p}, {"w": np.array([0.5])})
    assert p[0] == pytest.approx(0.850000002, abs=1e-12)
    assert opt.state["m"]["w"][0] == pytest.approx(0.05) and opt.state["v"]["w"][0] == pytest.approx(0.00025)
    # step 2: decay p = 0.85 * 0.95 = 0.8075; m = 0.9*0.05 + 0.1*(-0.25) = 0.02;
    #         v = 0.999*0.00025 + 0.001*0.0625 = 0.00031225; m^ = 0.02/0.19 = 0.1052632;
    #         v^ = 0.00031225/0.001999 = 0.1562031, sqrt = 0.3952254; p = 0.8075 - 0.1*0.1052632/0.3952254
    #           = 0.8075 - 0.0266337 = 0.7808663
    opt.step({"w": p}, {"w": np.array([-0.25])})
    assert p[0] == pytest.approx(0.7808663, abs=1e-7)
    assert opt.state["m"]["w"][0] == pytest.approx(0.02) and opt.state["v"]["w"][0] == pytest.approx(0.00031225)


def test_weight_decay_is_decoupled_from_the_gradient():
    # with a zero gradient the moments stay zero and only the decay moves the weights
    opt = AdamW(lr=0.01, weight_decay=0.1)
    p = np.array([2.0, -4.0], np.float32)
    opt.step({"w": p}, {"w": np.zeros(2, np.float32)})
    np.testing.assert_allclose(p, [2.0 * 0.999, -4.0 * 0.999], rtol=1e-6)
    assert not opt.state["m"]["w"].any() and not opt.state["v"]["w"].any()
    assert p.dtype == np.float32


def test_state_dict_round_trip_resumes_exactly():
    rng = np.random.default_rng(0)
    grads = [{"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)} for _ in range(4)]
    p_ref = {"a": np.ones((3, 2)), "b": np.zeros(2)}
    ref = AdamW(lr=0.05)
    for g in grads:
        ref.step(p_ref, g)
    p = {"a": np.ones((3, 2)), "b": np.zeros(2)}
    first = AdamW(lr=0.05)
    for g in grads[:2]:
        first.step(p, g)
    state = first.state_dict()
    assert sorted(state) == ["m/a", "m/b", "t", "v/a", "v/b"]
    resumed = AdamW(lr=0.05)
    resumed.load_state_dict(state)
    for g in grads[2:]:
        resumed.step(p, g)
    for key in p:
        np.testing.assert_array_equal(p[key], p_ref[key])


@pytest.mark.parametrize("kwargs", [{"lr": 0}, {"beta1": 1.0}, {"beta2": -0.1}, {"eps": 0}, {"weight_decay": -1}])
def test_bad_hyperparameters_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        AdamW(**kwargs)


def adamw_reference(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """The paper's update for one number: ``state`` holds its moments, ``t`` counts from 1."""

    def step(p, g, state, t):
        p *= 1 - lr * weight_decay
        m = state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
        v = state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g * g
        return p - lr * (m / (1 - beta1**t)) / (math.sqrt(v / (1 - beta2**t)) + eps)

    return step


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_steps_match_the_per_element_reference(weight_decay):
    optimizer = AdamW(lr=0.01, weight_decay=weight_decay)
    check_optimizer_steps(optimizer, adamw_reference(0.01, weight_decay=weight_decay), steps=6)
