"""Sequential: a model built from a list of layers, with every shape inferred.

After ``build`` all parameters live in one flat buffer (and all gradients in
another), each layer's ``params`` / ``grads`` entries being views into them, so an
optimizer updates the whole model in a few NumPy calls.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from labnet.errors import ShapeError
from labnet.nn.layer import Layer


class Sequential:
    """Layers applied in order. ``weight_decay`` is the book's L2 penalty
    ``0.5 * λ * Σ W²`` on weight matrices (not biases), added to loss and gradients."""

    def __init__(self, layers: Iterable[Layer], weight_decay: float = 0.0) -> None:
        self.layers = list(layers)
        self.weight_decay = float(weight_decay)
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None

    # -- building ----------------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32) -> Sequential:
        """Create every layer's parameters for samples of ``input_shape``; raises ShapeError."""
        self.dtype = np.dtype(dtype)
        self.input_shape = shape = tuple(int(s) for s in input_shape)
        for index, layer in enumerate(self.layers):
            try:
                out = layer.build(shape, rng, self.dtype)
            except ShapeError as err:
                raise ShapeError(
                    f"layer {index} ({layer.name or type(layer).__name__}) cannot take input of shape {shape}: {err}"
                ) from None
            layer.needs_input_grad = index > 0
            shape = tuple(out)
        self.output_shape = shape
        self._flatten_parameters()
        return self

    def _flatten_parameters(self) -> None:
        entries = [(i, layer, k) for i, layer in enumerate(self.layers) for k in layer.params]
        # weight matrices first: the L2 penalty then covers one contiguous slice
        entries.sort(key=lambda e: e[1].params[e[2]].ndim < 2)
        sizes = [e[1].params[e[2]].size for e in entries]
        total = int(sum(sizes))
        self.flat_params = np.empty(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._grad_views: list[tuple[dict, str, np.ndarray]] = []
        self.n_decayed = 0
        offset = 0
        for (i, layer, k), size in zip(entries, sizes, strict=True):
            shape = layer.params[k].shape
            if layer.params[k].ndim >= 2:
                self.n_decayed = offset + size
            p = self.flat_params[offset : offset + size].reshape(shape)
            p[...] = layer.params[k]
            g = self.flat_grads[offset : offset + size].reshape(shape)
            layer.params[k], layer.grads[k] = p, g
            self.params[f"{i}.{k}"], self.grads[f"{i}.{k}"] = p, g
            self._grad_views.append((layer.grads, k, g))
            offset += size
        self._decay_buf = np.empty(self.n_decayed, self.dtype)

    def clone(self) -> Sequential:
        """An independent copy with its own parameters, gradients and buffers: a model to evaluate
        (in another thread) while this one trains on."""
        twin = copy.deepcopy(self)
        if self.input_shape is not None:  # (deepcopy copied the flat buffer and its views apart)
            twin._flatten_parameters()
        return twin

    # -- computation -------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Scores for ``x``; training mode by default, like every layer (forward then backward is training),
        ``train=False`` or :meth:`predict` for evaluation (dropout off, batch norm's running statistics)."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dout: np.ndarray) -> None:
        """Fill ``grads`` (and ``flat_grads``) from the loss gradient ``dout``."""
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        for grads, key, view in self._grad_views:
            g = grads[key]
            if g is not view:  # a layer that rebinds its grads (the book's style) still works
                view[...] = g
                grads[key] = view
        if self.weight_decay:  # grads += wd * W over the weight matrices, through a kept buffer
            n = self.n_decayed
            self.flat_grads[:n] += np.multiply(self.flat_params[:n], self.weight_decay, out=self._decay_buf)

    def regularization_loss(self) -> float:
        if not self.weight_decay:
            return 0.0
        w = self.flat_params[: self.n_decayed]
        return 0.5 * self.weight_decay * float(np.dot(w, w))

    def predict(self, x: np.ndarray, batch_size: int = 10_000) -> np.ndarray:
        """Scores for ``x`` in evaluation mode, in chunks to bound memory."""
        outs = [self.forward(x[i : i + batch_size], train=False).copy() for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.empty((0, *self.output_shape), self.dtype)

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers keyed ``"<layer index>.<name>"`` (copies)."""
        state = {k: v.copy() for k, v in self.params.items()}
        for i, layer in enumerate(self.layers):
            state.update({f"{i}.{k}": v.copy() for k, v in layer.buffers.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ShapeError(f"weights do not fit this model: missing {missing}, unexpected {extra}")
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.buffers):
                for k, arr in store.items():
                    value = state[f"{i}.{k}"]
                    if value.shape != arr.shape:
                        raise ShapeError(f"weight {i}.{k} has shape {value.shape}, this model needs {arr.shape}")
                    arr[...] = value

    # -- description -------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def summary(self) -> str:
        lines, shape = [], self.input_shape
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape) if shape is not None else None
            n = sum(p.size for p in layer.params.values())
            lines.append(f"{i:>3}  {layer!r:<40} -> {shape}  params={n}")
        return "\n".join(lines) + f"\n     total params={self.num_params}"

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"
