"""The built-in losses. Each takes targets as integer labels or one-hot rows.

Protocol: ``forward(scores, targets) -> float`` (mean over the batch), ``backward() ->
dscores``, and ``probabilities(scores)`` mapping raw model outputs to what a user
reads as a prediction (class probabilities for classifiers).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from labnet.errors import ShapeError


def _labels_of(targets: np.ndarray) -> np.ndarray:
    return targets if targets.ndim == 1 else targets.argmax(axis=1)


def _onehot(scores: np.ndarray, labels: np.ndarray, loss: str) -> np.ndarray:
    """Integer labels as one-hot rows of the scores' shape; labels that do not fit raise ShapeError."""
    _check_targets(scores, labels, loss)
    _check_label_range(scores, labels, loss)
    onehot = np.zeros_like(scores)
    onehot[np.arange(len(labels)), labels] = 1
    return onehot


def _check_label_range(scores: np.ndarray, labels: np.ndarray, loss: str) -> None:
    classes = scores.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ShapeError(
            f"{loss}: labels range from {labels.min()} to {labels.max()}, but the scores of shape {scores.shape} "
            f"have {classes} columns: the model's last layer needs as many outputs as the data set has classes"
        )


def _check_targets(scores: np.ndarray, targets: np.ndarray, loss: str) -> None:
    if targets.shape[0] != scores.shape[0] or (targets.ndim == 2 and targets.shape != scores.shape):
        raise ShapeError(
            f"{loss}: targets of shape {targets.shape} do not fit scores of shape {scores.shape}; "
            f"expected labels of shape ({scores.shape[0]},) or one-hot of shape {scores.shape}"
        )


class Loss:
    name: ClassVar[str] = ""
    #: False for a loss that ignores its targets (e.g. minimising the model's output itself)
    uses_targets: ClassVar[bool] = True

    def forward(self, scores: np.ndarray, targets: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy fused: stable (max-shifted) and with the short gradient
    ``(softmax(scores) - onehot(targets)) / n``.

    scores : ndarray of shape (n, classes); targets : (n,) labels or (n, classes) one-hot.

    Speed: the work is done on a transposed copy of the scores, (classes, n), in buffers
    reused across steps, so that the per-sample max and sum over a handful of classes are
    reductions along the long axis (a row-wise reduction of an (n, 10) array is several
    times slower in NumPy). ``backward`` returns the gradient as the transposed view of
    that buffer: an (n, classes) array in Fortran order, valid until the next ``forward``.
    """

    name = "softmax_cross_entropy"

    def __init__(self) -> None:
        #: per (shape, dtype) of the scores: probabilities (classes, n), row maxima, row sums, row indices, tiny
        self._workspaces: dict[tuple, tuple] = {}
        self._ws: tuple | None = None

    def _workspace(self, scores: np.ndarray) -> tuple:
        slot = (scores.shape, scores.dtype)
        ws = self._workspaces.get(slot)
        if ws is None:
            n, classes = scores.shape
            ws = self._workspaces[slot] = (
                np.empty((classes, n), scores.dtype),
                np.empty(n, scores.dtype),
                np.empty(n, scores.dtype),
                np.arange(n),
                np.finfo(scores.dtype).tiny,
            )
        return ws

    @staticmethod
    def _softmax_t(scores: np.ndarray, p_t: np.ndarray, row_max: np.ndarray, row_sum: np.ndarray) -> np.ndarray:
        """softmax(scores).T written into ``p_t`` (classes, n)."""
        np.copyto(p_t, scores.T)
        np.maximum.reduce(p_t, axis=0, out=row_max)
        np.subtract(p_t, row_max, out=p_t)
        np.exp(p_t, out=p_t)
        np.add.reduce(p_t, axis=0, out=row_sum)
        np.divide(p_t, row_sum, out=p_t)
        return p_t

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Class probabilities, a new array (the same arithmetic as ``forward``)."""
        if scores.ndim != 2:
            p = scores - scores.max(axis=1, keepdims=True)
            np.exp(p, out=p)
            p /= p.sum(axis=1, keepdims=True)
            return p
        n, classes = scores.shape
        p_t = np.empty((classes, n), scores.dtype)
        self._softmax_t(scores, p_t, np.empty(n, scores.dtype), np.empty(n, scores.dtype))
        return np.ascontiguousarray(p_t.T)

    def forward(self, scores, targets):
        n = scores.shape[0]
        if scores.ndim != 2:  # not the (n, classes) this loss is for: the plain path, and its errors
            self._ws = None
            self.n, self.targets = n, targets
            self.probs = self.probabilities(scores)
        else:
            ws = self._ws
            if ws is None or ws[1].shape[0] != n or ws[0].shape[0] != scores.shape[1] or ws[0].dtype != scores.dtype:
                ws = self._ws = self._workspace(scores)
            p_t, row_max, row_sum, rows, tiny = ws
            self.n, self.targets = n, targets
            self._softmax_t(scores, p_t, row_max, row_sum)
            self.probs = p_t.T
            if targets.ndim == 1:
                if targets.shape[0] != n:
                    _check_targets(scores, targets, self.name)
                try:
                    picked = scores[rows, targets]
                except IndexError:
                    _check_label_range(scores, targets, self.name)
                    raise
                # -log softmax = log(sum(exp(s - max))) - (s_target - max): exact even far below the max
                np.subtract(row_max, picked, out=picked)  # per sample, so large scores do not cancel
                picked += np.log(row_sum, out=row_sum)
                return float(picked.sum(dtype=np.float64) / n)
        shifted = scores - scores.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        if targets.ndim == 1:
            _check_targets(scores, targets, self.name)
            _check_label_range(scores, targets, self.name)
            return float(-log_p[np.arange(n), targets].sum() / n)
        _check_targets(scores, targets, self.name)
        # only where a target is non-zero: a score of -inf (log p = -inf) with target 0 adds 0, not 0·inf = nan
        picked = np.multiply(targets, log_p, out=np.zeros_like(log_p), where=targets != 0)
        return float(-picked.sum() / n)

    def backward(self):
        """The gradient, written over the probabilities of the last ``forward`` (a buffer reused next step)."""
        d = self.probs
        if self.targets.ndim == 1:
            if self._ws is not None:
                self._ws[0][self.targets, self._ws[3]] -= 1
            else:
                d[np.arange(self.n), self.targets] -= 1
        else:
            d -= self.targets
        d /= self.n
        return d


class MeanSquaredError(Loss):
    """The book's sum of squares: 0.5 * sum((y - t)²) per sample, averaged over the batch.

    Integer labels are compared as one-hot rows.
    """

    name = "mse"

    def forward(self, scores, targets):
        if targets.ndim == 1 and scores.ndim == 2 and scores.shape[1] > 1:
            targets = _onehot(scores, targets, self.name)
        elif targets.ndim == 1 and scores.ndim == 2:  # one output column: the targets are its values
            _check_targets(scores[:, 0], targets, self.name)
            targets = targets[:, None]
        _check_targets(scores, targets, self.name)
        self.diff = scores - targets
        return float(0.5 * np.sum(self.diff**2) / scores.shape[0])

    def backward(self):
        return self.diff / self.diff.shape[0]


class SigmoidBinaryCrossEntropy(Loss):
    """Sigmoid and binary cross-entropy fused, for one or more independent 0/1 outputs.

    With one output column, integer labels 0/1 are the targets; with k columns, targets
    are (n, k) 0/1 rows (or labels, read as one-hot).
    """

    name = "sigmoid_binary_cross_entropy"

    def probabilities(self, scores):
        return 0.5 * (1.0 + np.tanh(0.5 * scores))  # the stable form of 1 / (1 + exp(-s))

    def forward(self, scores, targets):
        t = targets.astype(scores.dtype)
        if t.ndim == 1:
            if scores.shape[1] == 1:
                _check_targets(scores[:, 0], t, self.name)
                t = t[:, None]
            else:
                t = _onehot(scores, targets, self.name)
        _check_targets(scores, t, self.name)
        self.t, self.n = t, scores.shape[0]
        self.probs = self.probabilities(scores)
        # log(1 + exp(-|s|)) + max(s, 0) - s*t is the stable form of the cross-entropy
        loss = np.logaddexp(0, -np.abs(scores)) + np.maximum(scores, 0) - scores * t
        return float(loss.sum() / self.n)

    def backward(self):
        return (self.probs - self.t) / self.n


BUILTIN_LOSSES = [SoftmaxCrossEntropy, MeanSquaredError, SigmoidBinaryCrossEntropy]
