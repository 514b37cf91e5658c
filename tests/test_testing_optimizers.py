"""labnet.testing's optimizer checks and the documented Optimizer contract: Lion written right passes,
Lion with weight decay applied twice or a momentum that never moves fails, by name; the built-ins match
plain per-element references; the pre-contract names (``_buffer``, ``t``) still work."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labnet.nn.optimizers import SGD, Adam, Momentum, Optimizer
from labnet.testing import check_optimizer_steps, weight_decay_applied_once
from labnet.testing.contracts import check_optimizer


class Lion(Optimizer):
    """Lion (Chen et al. 2023): c = b1 m + (1-b1) g;  p *= 1 - lr wd;  p -= lr sign(c);  m = b2 m + (1-b2) g"""

    name = "test_lion"
    slots = ("m",)
    decoupled_weight_decay = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2 = beta1, beta2

    def update(self, key, p, g):
        m, c = self.slot("m", key, p), self.scratch("c", key, p)
        np.multiply(m, self.beta1, out=c)
        c += (1 - self.beta1) * g
        if self.weight_decay:
            p *= 1 - self.lr * self.weight_decay
        p -= self.lr * np.sign(c)
        m *= self.beta2
        m += (1 - self.beta2) * g


class LionDecayTwice(Lion):
    decoupled_weight_decay = False  # the base step() adds weight_decay * p to g as well


class LionFrozenMomentum(Lion):
    def update(self, key, p, g):
        m = self.slot("m", key, p)
        if self.weight_decay:
            p *= 1 - self.lr * self.weight_decay
        p -= self.lr * np.sign(self.beta1 * m + (1 - self.beta1) * g)  # m is read, never written


def lion_reference(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.0):
    def step(p, g, state, t):
        m = state.get("m", 0.0)
        c = beta1 * m + (1 - beta1) * g
        p = p * (1 - lr * weight_decay) - lr * math.copysign(1.0, c) * (c != 0)
        state["m"] = beta2 * m + (1 - beta2) * g
        return p

    return step


def rows(cls):
    return {check: (result, detail) for check, result, _, detail in check_optimizer(cls, cls.name)}


def test_lion_written_to_the_contract_passes_every_check_and_its_reference():
    assert {result for result, _ in rows(Lion).values()} == {"PASS"}, rows(Lion)
    check_optimizer_steps(Lion(lr=0.01, weight_decay=0.1), lion_reference(lr=0.01, weight_decay=0.1))


def test_weight_decay_applied_twice_fails_by_name():
    result, detail = rows(LionDecayTwice)["weight decay"]
    assert result == "FAIL" and "applied twice (coupled and decoupled before the update)" in detail, detail
    assert "decoupled_weight_decay = True" in detail
    # the same mistake in the author's reference does not hide it
    wrong_reference = lion_reference(lr=0.01, weight_decay=0.1)
    with pytest.raises(AssertionError, match="applied twice"):
        check_optimizer_steps(LionDecayTwice(lr=0.01, weight_decay=0.1), _coupled_too(wrong_reference, 0.1))


def _coupled_too(reference, weight_decay):
    return lambda p, g, state, t: reference(p, g + weight_decay * p, state, t)


def test_a_momentum_that_never_changes_fails_the_slot_check():
    result, detail = rows(LionFrozenMomentum)["state slots"]
    assert result == "FAIL" and "slot 'm' never changes over 3 steps (stays zeros)" in detail, detail


def test_a_declared_slot_never_created_fails():
    class Forgetful(SGD):
        name = "forgetful"
        slots = ("v",)

    result, detail = rows(Forgetful)["state slots"]
    assert result == "FAIL" and "slot 'v' is declared but never created" in detail


def test_an_ignored_weight_decay_fails():
    class Ignores(SGD):
        decoupled_weight_decay = True  # claims to decay itself, does not

    passed, _, detail = weight_decay_applied_once(lambda **kw: Ignores(lr=0.1, **kw))
    assert not passed and "exactly as with weight_decay=0" in detail


def test_builtins_apply_coupled_decay_once():
    for cls in (SGD, Momentum, Adam):
        passed, _, detail = weight_decay_applied_once(lambda cls=cls, **kw: cls(**kw))
        assert passed and "coupled" in detail, (cls.name, detail)


def test_sgd_and_adam_match_plain_references():
    def sgd(p, g, state, t, lr=0.1, wd=0.01):
        return p - lr * (g + wd * p)

    def adam(p, g, state, t, lr=0.01, b1=0.9, b2=0.999, eps=1e-7):
        m = state["m"] = state.get("m", 0.0) + (1 - b1) * (g - state.get("m", 0.0))
        v = state["v"] = state.get("v", 0.0) + (1 - b2) * (g * g - state.get("v", 0.0))
        return p - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + eps)

    assert check_optimizer_steps(SGD(lr=0.1, weight_decay=0.01), sgd) < 1e-12
    check_optimizer_steps(Adam(lr=0.01), adam, rtol=1e-6)


def test_a_wrong_reference_names_the_step_parameter_and_element():
    def too_fast(p, g, state, t):
        return p - 0.2 * g

    with pytest.raises(AssertionError, match=r"step 1, parameter '0.W'\[0, 0\]: SGD gives .* the reference"):
        check_optimizer_steps(SGD(lr=0.1), too_fast)


def test_pre_contract_names_still_work():
    class OldStyle(Optimizer):
        """Written against the undocumented names: overrides step(), bumps self.t, uses self._buffer."""

        name = "old_style"
        slots = ("v",)

        def step(self, params, grads):
            self.t += 1
            for key, p in params.items():
                self.update(key, p, grads[key])

        def update(self, key, p, g):
            v = self.slot("v", key, p)
            v += g
            p -= np.multiply(v, self.lr / self.t, out=self._buffer("tmp", key, p))

    opt = OldStyle(lr=0.5)
    p = np.array([1.0])
    opt.step({"w": p}, {"w": np.array([2.0])})
    opt.step({"w": p}, {"w": np.array([2.0])})
    assert opt.step_count == opt.t == 2 and opt.get_slot("v", "w")[0] == 4.0
    assert p[0] == pytest.approx(1.0 - 0.5 * 2.0 - 0.5 * 4.0 / 2)
    assert opt.state_dict()["t"] == 2 and opt.state["v"]["w"] is opt.get_slot("v", "w")


def test_get_slot_names_what_exists():
    opt = Momentum()
    with pytest.raises(KeyError, match=r"no state slot 'm'; its slots: \['v'\]"):
        opt.get_slot("m", "w")
    with pytest.raises(KeyError, match="created by the first step"):
        opt.get_slot("v", "w")
