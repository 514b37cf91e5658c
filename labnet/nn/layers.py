"""The built-in layers: affine, activations, dropout and batch norm.

Shapes in docstrings omit nothing: ``x`` is ``(n, *input_shape)``.
"""

from __future__ import annotations

import math

import numpy as np

from labnet.errors import ConfigError, ShapeError
from labnet.nn.init import init_weight
from labnet.nn.layer import Layer


class Affine(Layer):
    """Fully connected: ``out = x @ W + b`` with W of shape (n_in, units); n_in is inferred.

    x : ndarray of shape (n, n_in), out : ndarray of shape (n, units)
    """

    name = "affine"

    def __init__(self, units: int, init: str | float = "he", input_size: int | None = None) -> None:
        super().__init__()
        if int(units) <= 0:
            raise ConfigError(f"affine units={units!r}: must be a positive integer")
        self.units, self.init, self.input_size = int(units), init, input_size
        self._out = self._dx = self._ones = None  # the current workspace buffers, checked by shape, not looked up

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ShapeError(
                f"affine takes flat inputs of shape (features,), got {tuple(input_shape)}; "
                "set the data set's flatten=true, or put a `flatten` layer before it (from the labnet-conv plugin)"
            )
        if self.input_size is not None and input_shape[0] != self.input_size:
            raise ShapeError(f"affine was declared with input_size={self.input_size} but receives {input_shape[0]}")
        return (self.units,)

    def parameter_shapes(self, input_shape):
        return {"W": (int(input_shape[0]), self.units), "b": (self.units,)}

    def build(self, input_shape, rng, dtype):
        out = super().build(input_shape, rng, dtype)
        shapes = self.parameter_shapes(input_shape)
        self.params = {"W": init_weight(shapes["W"], self.init, rng, dtype), "b": np.zeros(shapes["b"], dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return out

    def forward(self, x, train=True):
        self.x = x
        out = self._out
        if out is None or out.shape[0] != x.shape[0] or out.dtype != x.dtype:
            out = self._out = self.workspace("out", (x.shape[0], self.units), x.dtype)
        np.matmul(x, self.params["W"], out=out)
        out += self.params["b"]
        return out

    def backward(self, dout):
        grads = self.grads
        np.matmul(self.x.T, dout, out=grads["W"])
        ones = self._ones
        if ones is None or ones.shape[0] != dout.shape[0] or ones.dtype != dout.dtype:
            ones = self._ones = self.workspace("ones", dout.shape[:1], dout.dtype)
            ones.fill(1)
        # the column sums as one BLAS gemv, ones @ dout: ~2x faster than np.add.reduce along axis 0
        np.matmul(ones, dout, out=grads["b"])
        if not self.needs_input_grad:
            return None
        dx = self._dx
        if dx is None or dx.shape != self.x.shape or dx.dtype != dout.dtype:
            dx = self._dx = self.workspace("dx", self.x.shape, dout.dtype)
        return np.matmul(dout, self.params["W"].T, out=dx)


class ReLU(Layer):
    """max(0, x); the mask of positive inputs is kept for backward."""

    name = "relu"

    def __init__(self) -> None:
        super().__init__()
        self._out = self._dx = self.mask = self._zeros = None

    def forward(self, x, train=True):
        out = self._out
        if out is None or out.shape != x.shape or out.dtype != x.dtype:
            out = self._out = self.workspace("out", x.shape, x.dtype)
            self._mask = self.workspace("mask", x.shape, np.bool_)
            # max(x, 0) against an array of zeros, not the scalar 0: NumPy's SIMD loop for maximum only
            # takes two arrays, and the scalar loop is ~3x slower (~15 us of a 128x100 batch)
            self._zeros = self.workspace("zeros", x.shape, x.dtype)
            self._zeros.fill(0)
        # the mask is only needed for backward: evaluation skips it (backward then derives it from the output)
        self.mask = np.greater(x, 0, out=self._mask) if train else None
        self.out = np.maximum(x, self._zeros, out=out)
        return out

    def backward(self, dout):
        mask = self.mask
        if mask is None:  # forward ran in evaluation mode: x > 0 exactly where max(x, 0) > 0
            mask = np.greater(self.out, 0, out=self.workspace("mask", self.out.shape, np.bool_))
        dx = self._dx
        if dx is None or dx.shape != dout.shape or dx.dtype != dout.dtype:
            dx = self._dx = self.workspace("dx", dout.shape, dout.dtype)
        return np.multiply(dout, mask, out=dx)


class Sigmoid(Layer):
    """1 / (1 + exp(-x)); backward uses the stored output: dx = dout * y * (1 - y)."""

    name = "sigmoid"

    def forward(self, x, train=True):
        out = self.workspace("out", x.shape, x.dtype)
        np.negative(x, out=out)
        np.exp(out, out=out)
        out += 1
        np.reciprocal(out, out=out)
        self.out = out
        return out

    def backward(self, dout):
        dx = self.workspace("dx", dout.shape, dout.dtype)
        np.subtract(1, self.out, out=dx)
        dx *= self.out
        dx *= dout
        return dx


class Tanh(Layer):
    """tanh(x); dx = dout * (1 - y²)."""

    name = "tanh"

    def forward(self, x, train=True):
        self.out = np.tanh(x, out=self.workspace("out", x.shape, x.dtype))
        return self.out

    def backward(self, dout):
        dx = self.workspace("dx", dout.shape, dout.dtype)
        np.multiply(self.out, self.out, out=dx)
        np.subtract(1, dx, out=dx)
        dx *= dout
        return dx


class Identity(Layer):
    """Passes its input through (the book's identity output function)."""

    name = "identity"

    def forward(self, x, train=True):
        return x

    def backward(self, dout):
        return dout


class Softmax(Layer):
    """Softmax over the last axis, as an inference output; training uses a fused loss instead."""

    name = "softmax"

    def forward(self, x, train=True):
        shifted = x - x.max(axis=-1, keepdims=True)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=-1, keepdims=True)
        self.out = shifted
        return shifted

    def backward(self, dout):
        dot = np.sum(dout * self.out, axis=-1, keepdims=True)
        return self.out * (dout - dot)


class Dropout(Layer):
    """Zeroes a fraction ``ratio`` of units while training and scales the rest by 1/(1-ratio).

    Inverted dropout, so evaluation is the identity (the book scales at eval instead;
    the expected activations are the same).
    """

    name = "dropout"

    def __init__(self, ratio: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(ratio) < 1.0:
            raise ConfigError(f"dropout ratio={ratio!r}: must be in [0, 1)")
        self.ratio = float(ratio)

    def forward(self, x, train=True):
        if not train or self.ratio == 0.0:
            self.scale = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.ratio
        self.scale = keep.astype(x.dtype) / (1.0 - self.ratio)
        return x * self.scale

    def backward(self, dout):
        return dout if self.scale is None else dout * self.scale


class BatchNorm(Layer):
    """Normalises each feature over the batch, then scales by gamma and shifts by beta.

    Running mean and variance (in ``buffers``) are used at evaluation; ``momentum``
    is their exponential-averaging factor, as in the book. Inputs of any shape are
    normalised per feature of the flattened sample.
    """

    name = "batchnorm"

    def __init__(self, momentum: float = 0.9, eps: float = 1e-7) -> None:
        super().__init__()
        if not 0.0 <= float(momentum) < 1.0:
            raise ConfigError(f"batchnorm momentum={momentum!r}: must be in [0, 1)")
        self.momentum, self.eps = float(momentum), float(eps)

    def parameter_shapes(self, input_shape):
        d = math.prod(int(s) for s in input_shape)
        return {"gamma": (d,), "beta": (d,)}

    def build(self, input_shape, rng, dtype):
        out = super().build(input_shape, rng, dtype)
        d = self.parameter_shapes(input_shape)["gamma"][0]
        self.params = {"gamma": np.ones(d, dtype), "beta": np.zeros(d, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(d, dtype), "running_var": np.ones(d, dtype)}
        return out

    def forward(self, x, train=True):
        self.input_shape = x.shape
        self.batch_statistics = train  # what backward differentiates: batch or running statistics
        x2 = x.reshape(x.shape[0], -1)
        if train:
            mu = x2.mean(axis=0)
            self.xc = x2 - mu
            var = np.mean(self.xc**2, axis=0)
            self.std = np.sqrt(var + self.eps)
            m = self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= m
            rm += (1 - m) * mu
            rv *= m
            rv += (1 - m) * var
        else:
            self.xc = x2 - self.buffers["running_mean"]
            self.std = np.sqrt(self.buffers["running_var"] + self.eps)
        self.xn = self.xc / self.std
        return (self.params["gamma"] * self.xn + self.params["beta"]).reshape(x.shape)

    def backward(self, dout):
        d2 = dout.reshape(dout.shape[0], -1)
        n = d2.shape[0]
        self.grads["beta"][...] = d2.sum(axis=0)
        self.grads["gamma"][...] = np.sum(self.xn * d2, axis=0)
        dxn = self.params["gamma"] * d2
        dxc = dxn / self.std
        if self.batch_statistics:  # the mean and the variance depend on x too
            dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
            dvar = 0.5 * dstd / self.std
            dxc += (2.0 / n) * self.xc * dvar
            dxc -= np.sum(dxc, axis=0) / n
        return dxc.reshape(self.input_shape)


BUILTIN_LAYERS = [Affine, ReLU, Sigmoid, Tanh, Identity, Softmax, Dropout, BatchNorm]
