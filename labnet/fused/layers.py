"""Stacked layers: k copies of one layer (a fused group's members) computed as one.

Activations between stacked layers are ``(k, n, *features)`` arrays, often strided views (the first affine
layer's output is ``(n, k, units)`` in memory, so that its backward is one wide product). The first layer of a
group whose members share the minibatch receives the shared ``(n, *features)`` batch instead (``shared_input``).

How a layer opts in (the plugin contract): a layer class defines a classmethod ``stacked(members)`` returning
a :class:`StackedLayer` for its k built instances; :class:`PerMember` is the ready-made form for any layer whose
``backward`` writes its ``grads`` in place (``stacked = classmethod(PerMember.of)``-style:
``stacked = classmethod(lambda cls, members: PerMember(members))``). The built-in layers opt in through
:data:`BUILTIN_STACKED` below (exact classes only: a subclass may change the math). A layer with no stacked form
makes its group train member by member.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from labnet.nn import layers as nn_layers
from labnet.nn.layer import Layer


class StackedLayer:
    """Base of stacked layers: ``params`` / ``grads`` / ``buffers`` hold stacked arrays (set by the stacked
    model, which owns their storage); ``member_view(key, stacked, j)`` is member j's array in its own shape."""

    #: the first layer may take the members' shared (n, *features) batch
    accepts_shared_input: ClassVar[bool] = False

    def __init__(self, members: Sequence[Layer]) -> None:
        self.members = list(members)
        self.k = len(self.members)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.needs_input_grad = True
        #: set by the model for each forward: x is one (n, ...) batch shared by every member
        self.shared_input = False
        #: param keys whose stacked array must be C-contiguous over the member axis (own storage segment)
        self.contiguous_params: frozenset[str] = frozenset()
        self._workspace: dict[tuple, np.ndarray] = {}

    # -- storage ------------------------------------------------------------------------
    def stacked_shape(self, key: str, member_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the stacked array of parameter or buffer ``key`` (default: a leading member axis)."""
        return (self.k, *member_shape)

    def member_view(self, key: str, stacked: np.ndarray, j: int) -> np.ndarray:
        """Member j's part of ``stacked`` (a parameter, gradient, buffer or optimizer slot), in its own shape."""
        return stacked[j]

    def workspace(self, key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        slot = (key, shape, np.dtype(dtype))
        buf = self._workspace.get(slot)
        if buf is None:
            buf = self._workspace[slot] = np.empty(shape, dtype)
        return buf

    def stacked_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as (k, n, ...): a shared batch is broadcast (a view, no copy)."""
        return np.broadcast_to(x, (self.k, *x.shape)) if self.shared_input else x

    # -- computation -------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, {self.members[0]!r})"


def _member_array(k: int, values: Sequence[float], ndim: int, dtype) -> np.ndarray:
    """Per-member hyperparameters as a (k, 1, ...) array broadcasting over ``ndim`` stacked axes."""
    return np.asarray(values, dtype=dtype).reshape((k,) + (1,) * (ndim - 1))


class StackedAffine(StackedLayer):
    """k affine layers. W is kept transposed, (k, units, n_in), so that over a shared batch the forward pass is
    one wide product ``x @ [W_1 ... W_k]`` (out: (n, k*units)) and the weight gradient another
    (``dout(n, k*units).T @ x``); over per-member batches both are batched products."""

    accepts_shared_input = True

    def __init__(self, members: Sequence[Layer]) -> None:
        super().__init__(members)
        self.units = members[0].units
        self.contiguous_params = frozenset({"W"})

    def stacked_shape(self, key, member_shape):
        return (self.k, *member_shape[::-1]) if key == "W" else (self.k, *member_shape)

    def member_view(self, key, stacked, j):
        return stacked[j].T if key == "W" else stacked[j]

    def forward(self, x, train=True):
        self.x = x
        W, b, k, u = self.params["W"], self.params["b"], self.k, self.units
        if self.shared_input:  # one GEMM over the shared batch: (n, n_in) @ (n_in, k*u), laid out (n, k, u)
            n = x.shape[0]
            out = self.workspace("out_shared", (n, k, u), x.dtype)
            np.matmul(x, W.reshape(k * u, -1).T, out=out.reshape(n, k * u))
            out += b
            return out.transpose(1, 0, 2)
        out = self.workspace("out", (k, x.shape[1], u), x.dtype)
        np.matmul(x, W.transpose(0, 2, 1), out=out)
        out += b[:, None, :]
        return out

    def backward(self, dout):
        x, k, u = self.x, self.k, self.units
        gW, gb = self.grads["W"], self.grads["b"]
        n = dout.shape[1]
        ones = self.workspace("ones", (n,), dout.dtype)
        ones.fill(1)
        wide = dout.transpose(1, 0, 2)
        if self.shared_input and wide.flags.c_contiguous:  # (n, k*u) without a copy: one wide GEMM
            wide = wide.reshape(n, k * u)
            np.matmul(wide.T, x, out=gW.reshape(k * u, -1))
            db = np.matmul(ones, wide, out=self.workspace("db", (k * u,), dout.dtype))
            np.copyto(gb, db.reshape(k, u))
        else:
            np.matmul(dout.transpose(0, 2, 1), self.stacked_input(x), out=gW)
            np.matmul(ones, dout, out=gb)
        if not self.needs_input_grad:
            return None
        dx = self.workspace("dx", (k, *self.stacked_input(x).shape[1:]), dout.dtype)
        return np.matmul(dout, self.params["W"], out=dx)


class Elementwise(StackedLayer):
    """A layer with no parameters, randomness or per-member settings (relu, sigmoid, tanh, identity, softmax over
    the last axis): one instance of the single layer computes the whole stack, so its rule has one home."""

    accepts_shared_input = False

    def __init__(self, members: Sequence[Layer]) -> None:
        super().__init__(members)
        self.layer = copy.copy(members[0])
        self.layer._workspace = {}
        for cached in ("_out", "_dx", "mask", "_mask", "_zeros"):
            if hasattr(self.layer, cached):
                setattr(self.layer, cached, None)

    @staticmethod
    def _memory_order(x: np.ndarray) -> tuple[int, ...] | None:
        """The order of x's leading axes in which it is contiguous, when that is not the given one (None): (k, n, f)
        data laid out (n, k, f), a convolution's (k, n, C, H, W) laid out (k, C, n, H, W). The single layer gets that
        contiguous array, so its output keeps the layout the wide products need. The last axis stays last."""
        if x.ndim < 3 or x.flags.c_contiguous:
            return None
        last = x.ndim - 1
        order = tuple(sorted(range(last), key=lambda axis: -x.strides[axis]))
        return order if x.transpose(*order, last).flags.c_contiguous else None

    def _reorder(self, a: np.ndarray, inverse: bool = False) -> np.ndarray:
        if self.order is None:
            return a
        order = tuple(np.argsort(self.order)) if inverse else self.order
        return a.transpose(*order, a.ndim - 1)

    def forward(self, x, train=True):
        self.order = self._memory_order(x)
        return self._reorder(self.layer.forward(self._reorder(x), train), inverse=True)

    def backward(self, dout):
        return self._reorder(self.layer.backward(self._reorder(dout)), inverse=True)


class PerMember(StackedLayer):
    """Each member's own layer on its slice, one after another: exact for any layer (its own random draws in the
    single run's order, its own hyperparameters), at k Python calls a step. The members' ``params``, ``grads`` and
    ``buffers`` become views into the stacked storage, so the optimizer still updates one stack."""

    accepts_shared_input = True

    def bind(self) -> None:
        """Point each member's arrays at its slice of the stacked ones (called by the model once they exist)."""
        for j, layer in enumerate(self.members):
            for store, stacked_store in ((layer.params, self.params), (layer.grads, self.grads)):
                for key in store:
                    store[key] = self.member_view(key, stacked_store[key], j)
            for key in layer.buffers:
                layer.buffers[key] = self.member_view(key, self.buffers[key], j)

    def forward(self, x, train=True):
        outs = [layer.forward(x if self.shared_input else x[j], train) for j, layer in enumerate(self.members)]
        out = self.workspace("out", (self.k, *outs[0].shape), outs[0].dtype)
        for j, o in enumerate(outs):
            out[j] = o
        return out

    def backward(self, dout):
        dxs = []
        for j, layer in enumerate(self.members):
            dxs.append(layer.backward(dout[j]))
            for key, g in layer.grads.items():
                view = self.member_view(key, self.grads[key], j)
                if g is not view:  # a layer that rebinds its grads (the book's style)
                    view[...] = g
                    layer.grads[key] = view
        if not self.needs_input_grad or dxs[0] is None:
            return None
        dx = self.workspace("dx", (self.k, *dxs[0].shape), dxs[0].dtype)
        for j, d in enumerate(dxs):
            dx[j] = d
        return dx


class StackedBatchNorm(StackedLayer):
    """k batch norms, each over its own member's batch (the single layer's arithmetic on a member axis)."""

    accepts_shared_input = True

    def forward(self, x, train=True):
        x = self.stacked_input(x)
        k, dtype = self.k, x.dtype
        self.input_shape = x.shape
        x2 = x.reshape(k, x.shape[1], -1)
        momentum = _member_array(k, [m.momentum for m in self.members], 2, dtype)
        eps = _member_array(k, [m.eps for m in self.members], 2, dtype)
        gamma, beta = self.params["gamma"][:, None, :], self.params["beta"][:, None, :]
        if train:
            mu = x2.mean(axis=1)
            self.xc = x2 - mu[:, None, :]
            var = np.mean(self.xc**2, axis=1)
            self.std = np.sqrt(var + eps)[:, None, :]
            self.xn = self.xc / self.std
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= momentum
            rm += (1 - momentum) * mu
            rv *= momentum
            rv += (1 - momentum) * var
            xn = self.xn
        else:
            rm, rv = self.buffers["running_mean"][:, None, :], self.buffers["running_var"][:, None, :]
            xn = (x2 - rm) / np.sqrt(rv + eps[:, None])
        return (gamma * xn + beta).reshape(x.shape)

    def backward(self, dout):
        k = self.k
        d2 = dout.reshape(k, dout.shape[1], -1)
        n = d2.shape[1]
        self.grads["beta"][...] = d2.sum(axis=1)
        self.grads["gamma"][...] = np.sum(self.xn * d2, axis=1)
        dxn = self.params["gamma"][:, None, :] * d2
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=1, keepdims=True)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / n) * self.xc * dvar
        dmu = np.sum(dxc, axis=1, keepdims=True)
        return (dxc - dmu / n).reshape(self.input_shape)


#: the built-in layers' stacked forms, by exact class
BUILTIN_STACKED: dict[type[Layer], Callable[[Sequence[Layer]], StackedLayer]] = {
    nn_layers.Affine: StackedAffine,
    nn_layers.ReLU: Elementwise,
    nn_layers.Sigmoid: Elementwise,
    nn_layers.Tanh: Elementwise,
    nn_layers.Identity: Elementwise,
    nn_layers.Softmax: Elementwise,
    nn_layers.Dropout: PerMember,
    nn_layers.BatchNorm: StackedBatchNorm,
}


def stacked_form(layer_cls: type[Layer]) -> Callable[[Sequence[Layer]], StackedLayer] | None:
    """What stacks k layers of ``layer_cls``: its own ``stacked`` classmethod, else the built-in form of exactly
    that class; None when the layer has not opted in."""
    own = layer_cls.__dict__.get("stacked")
    if own is not None:
        return layer_cls.stacked
    return BUILTIN_STACKED.get(layer_cls)
