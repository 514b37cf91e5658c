"""The conv layers stacked: k members of a fused group (labnet.fused) computed as one.

Activations between stacked layers are (k, n, C, H, W). A stacked convolution keeps its output laid out
(k, F, n, OH, OW) in memory (returned as a (k, n, F, OH, OW) view): each member's output is then one matrix
(F, n*OH*OW), the product of its weights (F, C*kh*kw) with its columns (C*kh*kw, n*OH*OW), so

* the first convolution over a batch shared by every member (one seed) copies the kernel windows once and
  computes all members with one wide product ``[W_1; ...; W_k] @ col`` (k*F rows), its weight gradient with
  another (``dout (k*F, n*OH*OW) @ col.T``);
* a convolution over per-member batches is one batched product over the member axis.

Pooling has no parameters and treats the image and channel axes alike: each member's single layer pools its part
of the stack in whatever order it lies in memory, straight into the stack's arrays (no copy of a convolution's
output); flatten keeps the member and batch axes. The ReLU between them (labnet.fused.layers.Elementwise) keeps
the convolution's layout, so the convolution's backward finds its gradient laid out as its output was.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from labnet.fused.layers import StackedLayer
from labnet.nn.layer import Layer

from labnet_conv.im2col import col2im, pad_into, windows


def _same_hyperparameters(members: Sequence[Layer], ignore: tuple[str, ...] = ()) -> None:
    """The members of a stack must compute the same function of their parameters (else a group mixed them)."""
    first = {k: v for k, v in members[0].hyperparameters.items() if k not in ignore}
    for j, layer in enumerate(members[1:], 1):
        mine = {k: v for k, v in layer.hyperparameters.items() if k not in ignore}
        if mine != first:
            raise ValueError(f"member {j}'s {layer!r} differs from member 0's {members[0]!r}: they cannot be stacked")


class StackedConv2D(StackedLayer):
    """k :class:`~labnet_conv.layers.Conv2D` layers (the members' inits may differ; nothing else)."""

    accepts_shared_input = True

    def __init__(self, members: Sequence[Layer]) -> None:
        super().__init__(members)
        _same_hyperparameters(members, ignore=("init",))
        first = members[0]
        self.filters, self.kernel, self.stride, self.pad = first.filters, first.kernel_size, first.stride, first.pad
        # W (k, F, C, kh, kw) in a segment of its own: [W_1; ...; W_k] is the (k*F, C*kh*kw) matrix, no copy
        self.contiguous_params = frozenset({"W"})

    def forward(self, x, train=True):
        k, f, kk, s, p = self.k, self.filters, self.kernel, self.stride, self.pad
        shared = self.shared_input
        lead = () if shared else (k,)
        n, c, h, w = x.shape[-4:]
        _, oh, ow = self.members[0].output_shape((c, h, w))
        if p:
            x = pad_into(x, p, self.workspace("xpad", (*lead, n, c, h + 2 * p, w + 2 * p), x.dtype))
        # the columns as (C*kh*kw, n*OH*OW) matrices: one for all members, or one per member
        view = windows(x, kk, kk, s)  # (*lead, n, c, kh, kw, oh, ow)
        order = (1, 2, 3, 0, 4, 5) if shared else (0, 2, 3, 4, 1, 5, 6)
        col = self.workspace("col", (*lead, c, kk, kk, n, oh, ow), x.dtype)
        np.copyto(col, view.transpose(order))
        self.col, self.x_shape, self.was_shared = col, (n, c, h, w), shared
        rows, m = c * kk * kk, n * oh * ow
        out = self.workspace("out", (k, f, n, oh, ow), x.dtype)
        W = self.params["W"]
        if shared:  # one wide product for every member
            np.matmul(W.reshape(k * f, rows), col.reshape(rows, m), out=out.reshape(k * f, m))
        else:
            np.matmul(W.reshape(k, f, rows), col.reshape(k, rows, m), out=out.reshape(k, f, m))
        out += self.params["b"][:, :, None, None, None]
        return out.transpose(0, 2, 1, 3, 4)

    def backward(self, dout):
        k, f, kk, s, p = self.k, self.filters, self.kernel, self.stride, self.pad
        n, c, h, w = self.x_shape
        oh, ow = dout.shape[-2:]
        rows, m = c * kk * kk, n * oh * ow
        d = dout.transpose(0, 2, 1, 3, 4)  # (k, F, n, OH, OW): no copy when it is laid out as the output was
        if not d.flags.c_contiguous:
            d = _copy_into(self.workspace("dout", d.shape, dout.dtype), d)
        d2 = d.reshape(k, f, m)
        np.sum(d2, axis=2, out=self.grads["b"])
        gW, col = self.grads["W"], self.col
        if not gW.flags.c_contiguous:  # (the products below write through reshaped views of it)
            raise ValueError("StackedConv2D needs W's gradient in storage of its own (contiguous_params)")
        if self.was_shared:  # one wide product for every member's weight gradient
            np.matmul(d.reshape(k * f, m), col.reshape(rows, m).T, out=gW.reshape(k * f, rows))
        else:
            np.matmul(d2, col.reshape(k, rows, m).transpose(0, 2, 1), out=gW.reshape(k, f, rows))
        if not self.needs_input_grad:
            return None
        dcol = self.workspace("dcol", (k, c, kk, kk, n, oh, ow), dout.dtype)
        np.matmul(self.params["W"].reshape(k, f, rows).transpose(0, 2, 1), d2, out=dcol.reshape(k, rows, m))
        dxp = self.workspace("dxpad", (k, n, c, h + 2 * p, w + 2 * p), dout.dtype)
        col2im(dcol.transpose(0, 4, 1, 2, 3, 5, 6), s, dxp)
        return dxp[..., p : p + h, p : p + w] if p else dxp


def _copy_into(buffer: np.ndarray, x: np.ndarray) -> np.ndarray:
    np.copyto(buffer, x)
    return buffer


class StackedPool2D(StackedLayer):
    """k pooling layers, each pooling its member's part of the stack straight into the stack's buffers.

    Pooling makes several passes over its input, each cheap: over one member's planes (a single run's working
    set) they stay in cache, over the whole stack they would not (one pass over k members' planes was ~1.4x
    slower than k passes over one's). Each member's part is handed over in the order it lies in memory
    (a convolution's output is (k, C, n, ...)): pooling treats image and channel planes alike. The members'
    layers write their output and input gradient into slices of the stack's arrays (their ``out`` and
    ``dxpad`` workspaces are those slices), so nothing is copied."""

    def __init__(self, members: Sequence[Layer]) -> None:
        super().__init__(members)
        _same_hyperparameters(members)
        self.layers = []
        for _ in members:  # one instance per member: each keeps its own windows' winners for backward
            layer = copy.copy(members[0])
            layer._workspace = {}
            self.layers.append(layer)
        self.pad = members[0].pad

    def forward(self, x, train=True):
        self.order = order = _member_major_order(x)
        v = x.transpose(*order, 3, 4)  # (k, a, b, H, W), each member's (a, b, H, W) contiguous when it can be
        _, oh, ow = self.members[0].output_shape(x.shape[2:])
        out = self.workspace("out", (*v.shape[:3], oh, ow), x.dtype)
        for j, layer in enumerate(self.layers):
            _into(layer, "out", out[j])
            layer.forward(v[j], train)
        self.in_shape = v.shape
        return out.transpose(*np.argsort(order), 3, 4)

    def backward(self, dout):
        order, p = self.order, self.pad
        k, a, b, h, w = self.in_shape
        d = dout.transpose(*order, 3, 4)
        dxp = self.workspace("dxpad", (k, a, b, h + 2 * p, w + 2 * p), dout.dtype)
        for j, layer in enumerate(self.layers):
            _into(layer, "dxpad", dxp[j])
            layer.backward(d[j])
        dx = dxp[..., p : p + h, p : p + w] if p else dxp
        return dx.transpose(*np.argsort(order), 3, 4)


def _member_major_order(x: np.ndarray) -> tuple[int, int, int]:
    """(0, i, j): the order of x's image and channel axes in which each member's part is contiguous."""
    return (0, 2, 1) if x[0].transpose(1, 0, 2, 3).flags.c_contiguous and not x[0].flags.c_contiguous else (0, 1, 2)


def _into(layer: Layer, key: str, buffer: np.ndarray) -> None:
    """Make ``buffer`` the single layer's workspace ``key`` of its shape and dtype: the layer computes into it."""
    layer._workspace[(key, buffer.shape, buffer.dtype)] = buffer


class StackedFlatten(StackedLayer):
    """k flatten layers: (k, n, *shape) -> (k, n, prod(shape)), a copy only when the input is laid out otherwise."""

    def forward(self, x, train=True):
        self.x_shape = x.shape
        k, n = x.shape[:2]
        if not x.flags.c_contiguous:
            x = _copy_into(self.workspace("x", x.shape, x.dtype), x)
        return x.reshape(k, n, -1)

    def backward(self, dout):
        return dout.reshape(self.x_shape)
