"""A plugin as a third party would write it: one layer and one optimizer, via hooks only."""

from __future__ import annotations

import numpy as np

import labnet
from labnet.nn.layer import Layer
from labnet.nn.optimizers import Optimizer


class Scale(Layer):
    """``out = s * x`` with one learnable scalar ``s`` (stored with shape (1,)).

    x : ndarray of shape (n, *input_shape); ``backward`` overwrites ``grads["s"]`` with
    ``sum(dout * x)`` and returns ``dout * s``.
    """

    name = "test_scale"

    def __init__(self, init: float = 1.5) -> None:
        super().__init__()
        self.init = float(init)

    def build(self, input_shape, rng, dtype):
        out = super().build(input_shape, rng, dtype)
        self.params = {"s": np.full(1, self.init, dtype)}
        self.grads = {"s": np.zeros(1, dtype)}
        return out

    def forward(self, x, train=True):
        self.x = x
        return x * self.params["s"][0]

    def backward(self, dout):
        self.grads["s"][0] = np.sum(dout * self.x)
        return dout * self.params["s"][0]


class SgdClone(Optimizer):
    """Plain SGD, ``p -= lr * g``, written the book's way."""

    name = "test_sgd_clone"

    def update(self, key, p, g):
        p -= self.lr * g


@labnet.hookimpl
def labnet_layers():
    return [Scale]


@labnet.hookimpl
def labnet_optimizers():
    return [SgdClone]
