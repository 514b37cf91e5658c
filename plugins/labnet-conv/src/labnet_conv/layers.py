"""Convolution, pooling and flatten layers for images in NCHW layout.

Every layer takes samples of shape (C, H, W): ``x`` is (n, C, H, W). Spatial sizes follow
``out = (size + 2*pad - kernel) // stride + 1``; a kernel larger than the padded input
raises :class:`labnet.errors.ShapeError` at build time. Outputs and gradients live in
workspace buffers reused from step to step (copy a result you want to keep).
"""

from __future__ import annotations

import numpy as np
from labnet.errors import ConfigError, ShapeError
from labnet.nn.init import init_weight
from labnet.nn.layer import Layer

from labnet_conv.im2col import col2im, im2col, output_size, pad_into


def _int_at_least(layer: str, key: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{layer} {key}={value!r}: must be an integer >= {low}")
    return int(value)


def _image_shape(layer: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ShapeError(
            f"{layer} takes images of shape (channels, height, width), got {tuple(input_shape)}; "
            "for MNIST set the data set's flatten=false"
        )
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in the book) by im2col and one matrix product per image.

    Parameters
    ----------
    filters : number of output channels F
    kernel_size : height and width k of the square kernel
    stride : step between kernel positions
    pad : zero padding on each side of height and width
    init : weight initialiser name (``he``, ``xavier``, ``std``) or a float std; He uses
        fan_in = C*k*k

    W : ndarray of shape (F, C, k, k), b : ndarray of shape (F,)
    x : ndarray of shape (n, C, H, W), out : ndarray of shape (n, F, OH, OW)
    """

    name = "conv2d"
    example_input_shape = (2, 6, 6)
    #: constructor arguments for generic checks (``filters`` has no default)
    example_args = {"filters": 3}

    def __init__(self, filters: int, kernel_size: int = 3, stride: int = 1, pad: int = 0, init: str | float = "he"):
        super().__init__()
        self.filters = _int_at_least(self.name, "filters", filters, 1)
        self.kernel_size = _int_at_least(self.name, "kernel_size", kernel_size, 1)
        self.stride = _int_at_least(self.name, "stride", stride, 1)
        self.pad = _int_at_least(self.name, "pad", pad, 0)
        self.init = init

    @classmethod
    def stacked(cls, members):
        """k members' convolutions as one (fused sweeps): one wide product over a shared batch."""
        from labnet_conv.stacked import StackedConv2D

        return StackedConv2D(members)

    def output_shape(self, input_shape):
        _, h, w = _image_shape(self.name, input_shape)
        k, s, p = self.kernel_size, self.stride, self.pad
        what = f"conv2d kernel {k}x{k}"
        return (self.filters, output_size(h, k, s, p, what), output_size(w, k, s, p, what))

    def parameter_shapes(self, input_shape):
        c, k = int(input_shape[0]), self.kernel_size
        return {"W": (self.filters, c, k, k), "b": (self.filters,)}

    def build(self, input_shape, rng, dtype):
        out = super().build(input_shape, rng, dtype)
        shapes = self.parameter_shapes(input_shape)
        self.params = {"W": init_weight(shapes["W"], self.init, rng, dtype), "b": np.zeros(shapes["b"], dtype)}
        self.grads = {key: np.zeros_like(v) for key, v in self.params.items()}
        return out

    def forward(self, x, train=True):
        n, c, h, w = x.shape
        f, k, s, p = self.filters, self.kernel_size, self.stride, self.pad
        _, oh, ow = self.output_shape(x.shape[1:])
        if p:
            x = pad_into(x, p, self.workspace("xpad", (n, c, h + 2 * p, w + 2 * p), x.dtype))
        self.x_shape = (n, c, h, w)
        self.col = col = im2col(x, k, k, s, self.workspace("col", (n, c, k, k, oh, ow), x.dtype))
        out = self.workspace("out", (n, f, oh, ow), x.dtype)
        np.matmul(self.params["W"].reshape(f, -1), col.reshape(n, c * k * k, oh * ow), out=out.reshape(n, f, -1))
        out += self.params["b"][:, None, None]
        return out

    def backward(self, dout):
        n, c, h, w = self.x_shape
        f, k, s, p = self.filters, self.kernel_size, self.stride, self.pad
        oh, ow = dout.shape[2:]
        d2 = dout.reshape(n, f, oh * ow)
        col2 = self.col.reshape(n, c * k * k, oh * ow)
        np.sum(dout, axis=(0, 2, 3), out=self.grads["b"])
        per_image = self.workspace("dW_per_image", (n, f, c * k * k), dout.dtype)
        np.matmul(d2, col2.transpose(0, 2, 1), out=per_image)
        np.sum(per_image, axis=0, out=self.grads["W"].reshape(f, -1))
        if not self.needs_input_grad:
            return None
        dcol = self.workspace("dcol", (n, c, k, k, oh, ow), dout.dtype)
        np.matmul(self.params["W"].reshape(f, -1).T, d2, out=dcol.reshape(n, c * k * k, oh * ow))
        dxp = col2im(dcol, s, self.workspace("dxpad", (n, c, h + 2 * p, w + 2 * p), dout.dtype))
        return dxp[:, :, p : p + h, p : p + w] if p else dxp


class _Pool2D(Layer):
    """Shared shape logic of the pooling layers: a size x size window moved by ``stride``.

    Both compute their output into the workspace ``out`` and their padded input gradient into ``dxpad``
    (labnet_conv.stacked hands them slices of a fused stack's arrays there)."""

    example_input_shape = (2, 6, 6)

    def __init__(self, size: int = 2, stride: int | None = None, pad: int = 0) -> None:
        super().__init__()
        self.size = _int_at_least(self.name, "size", size, 1)
        self.stride = self.size if stride is None else _int_at_least(self.name, "stride", stride, 1)
        self.pad = _int_at_least(self.name, "pad", pad, 0)
        if self.pad >= self.size:
            raise ConfigError(
                f"{self.name} pad={pad!r} with size={size!r}: pad must be smaller than the window, "
                "or some windows would hold only padding"
            )

    def output_shape(self, input_shape):
        c, h, w = _image_shape(self.name, input_shape)
        k, s, p = self.size, self.stride, self.pad
        what = f"{self.name} window {k}x{k}"
        return (c, output_size(h, k, s, p, what), output_size(w, k, s, p, what))

    def _window_slices(self, oh: int, ow: int):
        """(position index, slice of the padded input) for each of the size*size window offsets."""
        k, s = self.size, self.stride
        for i in range(k):
            for j in range(k):
                yield i * k + j, (slice(None), slice(None), slice(i, i + s * oh, s), slice(j, j + s * ow, s))

    def _padded(self, x: np.ndarray, value: float) -> np.ndarray:
        if not self.pad:
            return x
        n, c, h, w = x.shape
        p = self.pad
        return pad_into(x, p, self.workspace("xpad", (n, c, h + 2 * p, w + 2 * p), x.dtype), value)

    def _unpad(self, dxp: np.ndarray) -> np.ndarray:
        p = self.pad
        return dxp[:, :, p:-p, p:-p] if p else dxp


class MaxPool2D(_Pool2D):
    """Maximum over each size x size window (stride defaults to size; padding is -inf).

    x : ndarray of shape (n, C, H, W), out : ndarray of shape (n, C, OH, OW). The gradient
    of a window flows to its first maximum in row-major order (the element ``argmax`` picks),
    so ties (e.g. all-zero windows after a ReLU) route it once, not to every maximum.

    Forward is a chain of ``np.maximum`` over the size*size window offsets; in training it also
    keeps the winning offset per window (uint8), updated branch-free as ``max(arg, better*pos)``
    (offsets grow, so a later winner always has the larger index). Masked ``copyto(where=...)``
    is several times slower on such irregular masks. Evaluation skips the offsets; a backward
    after it (input gradients of a trained net) finds them in the input it kept.
    """

    name = "max_pool2d"

    @classmethod
    def stacked(cls, members):
        """k members' pooling as one (fused sweeps)."""
        from labnet_conv.stacked import StackedPool2D

        return StackedPool2D(members)

    def forward(self, x, train=True):
        n, c = x.shape[:2]
        _, oh, ow = self.output_shape(x.shape[1:])
        xp = self._padded(x, -np.inf)
        shape = (n, c, oh, ow)
        out = self.workspace("out", shape, x.dtype)
        self.arg = self._max_and_arg(xp, out, train)
        # evaluation skips the argmax; a backward after it finds the argmax in the (padded) input kept here
        self.xp, self.xp_shape = (None if train else xp), xp.shape
        return out

    def _max_and_arg(self, xp: np.ndarray, out: np.ndarray, with_arg: bool) -> np.ndarray | None:
        """The window maxima into ``out``, and the winning offsets when ``with_arg``."""
        shape = out.shape
        arg_dtype = np.uint8 if self.size * self.size <= 256 else np.int32
        arg = self.workspace("arg", shape, arg_dtype) if with_arg else None
        better = self.workspace("better", shape, np.bool_) if with_arg else None
        cand = self.workspace("cand", shape, arg_dtype) if with_arg else None
        for pos, sl in self._window_slices(*shape[2:]):
            window = xp[sl]
            if pos == 0:
                out[...] = window
                if with_arg:
                    arg.fill(0)
                continue
            if with_arg:
                np.greater(window, out, out=better)
                np.multiply(better, pos, out=cand, dtype=arg_dtype)
                np.maximum(arg, cand, out=arg)
            np.maximum(out, window, out=out)
        return arg

    def backward(self, dout):
        if self.arg is None:  # forward ran in evaluation mode
            self.arg = self._max_and_arg(self.xp, self.workspace("best", dout.shape, self.xp.dtype), True)
        k, s, p = self.size, self.stride, self.pad
        oh, ow = dout.shape[2:]
        hp, wp = self.xp_shape[2:]
        dxp = self.workspace("dxpad", self.xp_shape, dout.dtype)
        disjoint = s >= k  # each input element lies in at most one window: write instead of add
        if not (disjoint and s == k and oh * k == hp and ow * k == wp):
            dxp.fill(0)  # some elements are in no window, or in several
        hit = self.workspace("hit", dout.shape, np.bool_)
        routed = None if disjoint else self.workspace("routed", dout.shape, dout.dtype)
        for pos, sl in self._window_slices(oh, ow):
            np.equal(self.arg, pos, out=hit)
            if disjoint:
                np.multiply(dout, hit, out=dxp[sl])
            else:
                np.multiply(dout, hit, out=routed)
                dxp[sl] += routed
        return dxp[:, :, p : p + hp - 2 * p, p : p + wp - 2 * p] if p else dxp


class AvgPool2D(_Pool2D):
    """Mean over each size x size window (stride defaults to size; zero padding counts in the mean).

    x : ndarray of shape (n, C, H, W), out : ndarray of shape (n, C, OH, OW)
    """

    name = "avg_pool2d"

    @classmethod
    def stacked(cls, members):
        """k members' pooling as one (fused sweeps)."""
        from labnet_conv.stacked import StackedPool2D

        return StackedPool2D(members)

    def forward(self, x, train=True):
        n, c = x.shape[:2]
        _, oh, ow = self.output_shape(x.shape[1:])
        xp = self._padded(x, 0.0)
        self.xp_shape = xp.shape
        out = self.workspace("out", (n, c, oh, ow), x.dtype)
        out.fill(0)
        for _, sl in self._window_slices(oh, ow):
            out += xp[sl]
        out *= 1.0 / (self.size * self.size)
        return out

    def backward(self, dout):
        dxp = self.workspace("dxpad", self.xp_shape, dout.dtype)
        dxp.fill(0)
        share = np.multiply(dout, 1.0 / (self.size * self.size), out=self.workspace("share", dout.shape, dout.dtype))
        for _, sl in self._window_slices(*dout.shape[2:]):
            dxp[sl] += share
        return self._unpad(dxp)


class Flatten(Layer):
    """Reshapes each sample to a vector: (n, *shape) -> (n, prod(shape)), e.g. before ``affine``."""

    name = "flatten"
    example_input_shape = (2, 6, 6)

    @classmethod
    def stacked(cls, members):
        """k members' flatten as one (fused sweeps)."""
        from labnet_conv.stacked import StackedFlatten

        return StackedFlatten(members)

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def forward(self, x, train=True):
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.x_shape)


CONV_LAYERS = [Conv2D, MaxPool2D, AvgPool2D, Flatten]
