"""The stacked model: k built members' ``Sequential`` models as one, their parameters in shared storage.

Storage is a few *segments*, (k, size) arrays whose row j is member j's: each parameter a layer wants contiguous
over the member axis (the first affine weight, for its wide product) has a segment of its own, all the others
share one, weight matrices first (so the L2 penalty covers a prefix of every segment, as in ``Sequential``).
The optimizer steps the segments; the members' own models are kept to describe, export and load each member.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labnet.fused.layers import PerMember, StackedLayer, stacked_form
from labnet.nn.model import Sequential


def unstackable_layers(model: Sequential) -> list[str]:
    """The layers of ``model`` that have no stacked form, described for a message (empty: it stacks)."""
    return [
        f"layer {i} ({layer.name or type(layer).__name__}, {type(layer).__module__}.{type(layer).__qualname__})"
        for i, layer in enumerate(model.layers)
        if stacked_form(type(layer)) is None
    ]


class StackedModel:
    """k members of one architecture trained as one. ``forward`` returns (k, n, *output_shape) scores."""

    def __init__(self, members: Sequence[Sequential]) -> None:
        self.members = list(members)
        self.k = len(self.members)
        first = self.members[0]
        for model in self.members[1:]:
            if [type(layer) for layer in model.layers] != [type(layer) for layer in first.layers]:
                raise ValueError("the members of a fused group must have the same layers")
        missing = unstackable_layers(first)
        if missing:
            raise TypeError(f"no stacked form for {', '.join(missing)}")
        self.dtype, self.input_shape, self.output_shape = first.dtype, first.input_shape, first.output_shape
        self.layers: list[StackedLayer] = [
            stacked_form(type(layers[0]))(list(layers))
            for layers in zip(*(m.layers for m in self.members), strict=True)
        ]
        for i, layer in enumerate(self.layers):
            layer.needs_input_grad = i > 0
        self._allocate()
        self.weight_decay = np.array([m.weight_decay for m in self.members], self.dtype).reshape(-1, 1)
        self._decays = bool(self.weight_decay.any())
        self._decay_bufs = [np.empty((self.k, n), self.dtype) for n in self.decayed]

    # -- storage ------------------------------------------------------------------------
    def _allocate(self) -> None:
        k, first = self.k, self.members[0]
        entries = [(i, key, arr.shape) for i, layer in enumerate(first.layers) for key, arr in layer.params.items()]
        own = [e for e in entries if e[1] in self.layers[e[0]].contiguous_params]
        shared = sorted((e for e in entries if e not in own), key=lambda e: len(e[2]) < 2)
        #: per param (layer index, key): (segment index, offset, size, member shape)
        self.placement: dict[tuple[int, str], tuple[int, int, int, tuple]] = {}
        sizes, self.decayed = [], []
        for group in [[e] for e in own] + ([shared] if shared else []):
            offset = decayed = 0
            for i, key, shape in group:
                size = int(np.prod(shape))
                self.placement[(i, key)] = (len(sizes), offset, size, shape)
                offset += size
                decayed += size if len(shape) >= 2 else 0
            sizes.append(offset)
            self.decayed.append(decayed)
        self.param_segments = [np.empty((k, s), self.dtype) for s in sizes]
        self.grad_segments = [np.zeros((k, s), self.dtype) for s in sizes]
        params, grads = self.views(self.param_segments), self.views(self.grad_segments)
        for (i, key), stacked in params.items():
            layer = self.layers[i]
            layer.params[key], layer.grads[key] = stacked, grads[(i, key)]
            for j, member in enumerate(self.members):
                layer.member_view(key, stacked, j)[...] = member.layers[i].params[key]
        for i, layer in enumerate(self.layers):
            for key, arr in first.layers[i].buffers.items():
                layer.buffers[key] = stacked = np.empty(layer.stacked_shape(key, arr.shape), arr.dtype)
                for j, member in enumerate(self.members):
                    layer.member_view(key, stacked, j)[...] = member.layers[i].buffers[key]
            if isinstance(layer, PerMember):
                layer.bind()

    def views(self, segments: Sequence[np.ndarray]) -> dict[tuple[int, str], np.ndarray]:
        """Each parameter's stacked array as a view into ``segments`` (params, grads or an optimizer slot)."""
        out = {}
        for (i, key), (seg, offset, size, shape) in self.placement.items():
            out[(i, key)] = segments[seg][:, offset : offset + size].reshape(self.layers[i].stacked_shape(key, shape))
        return out

    # -- computation -------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = True, shared: bool = False) -> np.ndarray:
        """Scores (k, n, ...) for a shared batch ``x`` (n, ...) or per-member batches (k, n, ...)."""
        first = self.layers[0]
        first.shared_input = shared and first.accepts_shared_input
        if shared and not first.accepts_shared_input:
            x = np.broadcast_to(x, (self.k, *x.shape))
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dscores: np.ndarray) -> None:
        """Fill the gradient segments (each member's L2 penalty included)."""
        for layer in reversed(self.layers):
            dscores = layer.backward(dscores)
        if self._decays:
            for p, g, n, buf in zip(
                self.param_segments, self.grad_segments, self.decayed, self._decay_bufs, strict=True
            ):
                if n:
                    g[:, :n] += np.multiply(p[:, :n], self.weight_decay, out=buf)

    def regularization_loss(self) -> np.ndarray | None:
        """Each member's ``0.5 * λ * Σ W²`` as a (k,) array; None when no member has a penalty."""
        if not self._decays:
            return None
        total = np.zeros(self.k)
        for p, n in zip(self.param_segments, self.decayed, strict=True):
            w = p[:, :n]
            total += np.einsum("ij,ij->i", w, w)
        return 0.5 * self.weight_decay[:, 0].astype(np.float64) * total

    # -- members -----------------------------------------------------------------------
    def member_state_dict(self, j: int) -> dict[str, np.ndarray]:
        """Member j's weights and buffers keyed as its own ``Sequential.state_dict()`` (copies)."""
        state = {f"{i}.{key}": self.layers[i].member_view(key, arr, j).copy() for (i, key), arr in self._params()}
        for i, layer in enumerate(self.layers):
            state.update({f"{i}.{key}": layer.member_view(key, arr, j).copy() for key, arr in layer.buffers.items()})
        return state

    def _params(self):
        return ((ik, self.layers[ik[0]].params[ik[1]]) for ik in self.placement)

    def member_model(self, j: int) -> Sequential:
        """Member j's own model holding its current weights (for hooks, evaluation, weights.npz)."""
        model = self.members[j]
        model.load_state_dict(self.member_state_dict(j))
        return model

    def member_flat(self, j: int, segments: Sequence[np.ndarray]) -> np.ndarray:
        """Member j's row of ``segments`` (e.g. an optimizer slot) in the flat layout of its own model's
        ``flat_params``: what the member's single optimizer keeps for its one ``params`` entry."""
        model = self.members[j]
        flat = np.empty_like(model.flat_params)
        for (i, key), stacked in self.views(segments).items():
            offset = _offset_in(model.params[f"{i}.{key}"], model.flat_params)
            view = self.layers[i].member_view(key, stacked, j)
            flat[offset : offset + view.size] = view.ravel()
        return flat

    def load_member_flat(self, j: int, segments: Sequence[np.ndarray], flat: np.ndarray) -> None:
        """The inverse of :meth:`member_flat`: member j's row of ``segments`` from a flat array."""
        model = self.members[j]
        for (i, key), stacked in self.views(segments).items():
            target = model.params[f"{i}.{key}"]
            offset = _offset_in(target, model.flat_params)
            self.layers[i].member_view(key, stacked, j)[...] = flat[offset : offset + target.size].reshape(target.shape)

    def load_member_state_dict(self, j: int, state: dict[str, np.ndarray]) -> None:
        """Member j's weights and buffers from a ``Sequential.state_dict()``-style dict (checked by its model)."""
        self.members[j].load_state_dict(state)
        for (i, key), arr in self._params():
            self.layers[i].member_view(key, arr, j)[...] = state[f"{i}.{key}"]
        for i, layer in enumerate(self.layers):
            for key, arr in layer.buffers.items():
                layer.member_view(key, arr, j)[...] = state[f"{i}.{key}"]

    def zero_member(self, j: int) -> None:
        """Member j's weights set to zero: a failed member computes finite nothing while the others train on."""
        for seg in self.param_segments:
            seg[j].fill(0)


def _offset_in(view: np.ndarray, base: np.ndarray) -> int:
    """Element offset of ``view`` inside the contiguous ``base`` it is a view of."""
    return (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // base.itemsize
