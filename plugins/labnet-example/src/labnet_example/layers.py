"""A parameter-free activation layer: the pattern of every elementwise layer."""

from __future__ import annotations

import numpy as np
from labnet.nn.layer import Layer


class Swish(Layer):
    """Swish (SiLU): ``y = x * sigmoid(x)``; ``dy/dx = s + x * s * (1 - s)`` with ``s = sigmoid(x)``.

    x : ndarray of any shape (n, *input_shape); out has the same shape. ``backward``
    returns ``dout * dy/dx`` and leaves ``dout`` untouched.
    """

    name = "swish"

    def forward(self, x, train=True):
        s = self.workspace("sigmoid", x.shape, x.dtype)
        np.multiply(x, 0.5, out=s)
        np.tanh(s, out=s)  # sigmoid(x) = (1 + tanh(x / 2)) / 2, which never overflows
        s += 1
        s *= 0.5
        self.x, self.s = x, s
        return np.multiply(x, s, out=self.workspace("out", x.shape, x.dtype))

    def backward(self, dout):
        dx = self.workspace("dx", dout.shape, dout.dtype)
        np.subtract(1, self.s, out=dx)  # 1 - s
        dx *= self.x  # x (1 - s)
        dx += 1  # 1 + x (1 - s)
        dx *= self.s  # s + x s (1 - s)
        dx *= dout
        return dx
