"""The swish activation: numerical gradient, values, float32."""

from __future__ import annotations

import numpy as np
import pytest
from labnet.testing import gradcheck

from labnet_example.layers import Swish


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 4, 4)])
def test_swish_gradcheck(shape):
    x = np.random.default_rng(0).standard_normal(shape) * 3
    errors = gradcheck(Swish(), x)
    assert errors["input"] < 1e-6, errors


def test_swish_values_and_dtype():
    layer = Swish()
    layer.build((5,), np.random.default_rng(0), np.float32)
    x = np.array([[-1000.0, -1.0, 0.0, 1.0, 1000.0]], np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    with np.errstate(over="ignore"):  # exp(1000) is inf: x / inf = 0 is the right limit
        expected = x / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-30)
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_allclose(dx, [[0.0, 0.0723295, 0.5, 0.9276705, 1.0]], rtol=1e-5, atol=1e-6)
