"""Provides ``bad_scale``: ``out = s * x`` whose backward forgets the factor ``s`` in the input gradient.

``labnet plugins check`` must report its gradcheck as FAIL (input relative error 0.2 with s=1.5),
while the parameter gradient and the shapes are right.
"""

from __future__ import annotations

import numpy as np

import labnet
from labnet.nn.layer import Layer


class BadScale(Layer):
    name = "bad_scale"

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
        return dout.copy()  # wrong: the input gradient is dout * s


@labnet.hookimpl
def labnet_layers():
    return [BadScale]
