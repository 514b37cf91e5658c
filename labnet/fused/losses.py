"""Stacked losses: each member's mean loss over its own scores, as a (k,) vector.

``forward(scores, targets) -> (k,) array`` (a buffer reused next step) with scores (k, n, *out) and targets
shared, (n, ...), or per member, (k, n, ...); ``backward() -> dscores`` (k, n, *out).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labnet.nn import losses as nn_losses
from labnet.nn.losses import Loss


class StackedLoss:
    def __init__(self, members: Sequence[Loss]) -> None:
        self.members = list(members)
        self.k = len(self.members)
        self._values = np.zeros(self.k)

    def forward(self, scores: np.ndarray, targets: np.ndarray, per_member: bool = False) -> np.ndarray:
        """The members' mean losses; ``per_member``: targets has a leading member axis."""
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError


class PerMemberLoss(StackedLoss):
    """Each member's own loss object on its slice: the single loss's arithmetic, k calls a step."""

    def forward(self, scores, targets, per_member=False):
        self._scores_shape = scores.shape
        for j, loss in enumerate(self.members):
            self._values[j] = loss.forward(scores[j], targets[j] if per_member else targets)
        return self._values

    def backward(self):
        grads = [loss.backward() for loss in self.members]
        out = np.empty(self._scores_shape, grads[0].dtype)
        for j, g in enumerate(grads):
            out[j] = g
        return out


class StackedSoftmaxCrossEntropy(StackedLoss):
    """Softmax and cross-entropy fused, per member: loss_j = mean_i(log Σ exp(s - max) - (s_target - max)),
    gradient (softmax(s) - onehot) / n, the same arithmetic as the single loss over a member axis."""

    def __init__(self, members: Sequence[Loss]) -> None:
        super().__init__(members)
        #: per (scores shape, dtype): probabilities, row maxima, row sums and the index grids
        self._workspaces: dict[tuple, tuple] = {}

    def forward(self, scores, targets, per_member=False):
        k, n, c = scores.shape
        dtype = scores.dtype
        ws = self._workspaces.get((scores.shape, dtype))
        if ws is None:
            ws = self._workspaces[(scores.shape, dtype)] = (
                np.empty((k, n, c), dtype),
                np.empty((k, n, 1), dtype),
                np.empty((k, n, 1), dtype),
                np.arange(k)[:, None],
                np.arange(n)[None, :],
            )
        p, row_max, row_sum, ks, rows = ws
        np.maximum.reduce(scores, axis=2, out=row_max, keepdims=True)
        np.subtract(scores, row_max, out=p)
        np.exp(p, out=p)
        np.add.reduce(p, axis=2, out=row_sum, keepdims=True)
        np.divide(p, row_sum, out=p)
        if targets.dtype.kind in "iu":  # integer labels, shared (n,) or per member (k, n)
            self.index = (ks, rows, targets if per_member else targets[None, :])
            picked = scores[self.index]  # (k, n)
            np.subtract(row_max[:, :, 0], picked, out=picked)
            picked += np.log(row_sum[:, :, 0])
            np.add.reduce(picked, axis=1, dtype=np.float64, out=self._values)
        else:  # one-hot rows
            self.index = None
            log_p = (scores - row_max) - np.log(row_sum)
            t = targets if per_member else targets[None]
            np.add.reduce(-(t * log_p).reshape(k, -1), axis=1, dtype=np.float64, out=self._values)
            self.onehot = t
        self._values /= n
        self.p, self.n = p, n
        return self._values

    def backward(self):
        p = self.p
        if self.index is not None:
            p[self.index] -= 1
        else:
            p -= self.onehot
        p /= self.n
        return p

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return self.members[0].probabilities(scores)


#: the built-in losses' stacked forms (the others are computed member by member)
BUILTIN_STACKED_LOSSES = {nn_losses.SoftmaxCrossEntropy: StackedSoftmaxCrossEntropy}


def stacked_loss(members: Sequence[Loss]) -> StackedLoss:
    """The stacked form of the members' loss (all of one class, checked by the caller's grouping)."""
    cls = type(members[0])
    if any(type(m) is not cls for m in members):
        raise ValueError(f"a fused group has one loss; got {sorted({type(m).__name__ for m in members})}")
    return BUILTIN_STACKED_LOSSES.get(cls, PerMemberLoss)(members)
