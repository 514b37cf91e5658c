"""Evaluation metrics computed in chunks, so 70,000 samples cost one pass and bounded memory."""

from __future__ import annotations

import numpy as np

from labnet.data.base import Split
from labnet.nn.losses import Loss
from labnet.nn.model import Sequential


def labels_of(targets: np.ndarray) -> np.ndarray:
    """Integer labels from labels or one-hot rows."""
    return targets if targets.ndim == 1 else targets.argmax(axis=1)


def evaluate(model: Sequential, loss: Loss, split: Split, batch_size: int = 10_000) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``split`` in evaluation mode."""
    n = len(split)
    if n == 0:
        return float("nan"), float("nan")
    total_loss, correct = 0.0, 0
    for i in range(0, n, batch_size):
        x, y = split.x[i : i + batch_size], split.y[i : i + batch_size]
        scores = model.forward(x, train=False)
        correct += int(np.count_nonzero(predicted_labels(scores) == labels_of(y)))
        total_loss += loss.forward(scores, y) * len(x)
    return total_loss / n, correct / n


def predicted_labels(scores: np.ndarray) -> np.ndarray:
    """Class predictions: argmax of the scores, or a 0.5 threshold for a single output."""
    if scores.ndim == 2 and scores.shape[1] == 1:
        return (scores[:, 0] > 0).astype(np.int64)
    return scores.argmax(axis=1)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs, shape (num_classes, num_classes)."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
