"""Numerical gradient checks (the book's gradient check), public for plugin authors.

A layer is checked on ``f(x) = sum(forward(x) * R)`` for a fixed random ``R``, so
``backward(R)`` must equal the central-difference gradient of ``f`` with respect to
the input and to every parameter. Run it in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from labnet.nn.layer import Layer
from labnet.nn.losses import Loss


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / (||a|| + ||n||), 0 when both are zero."""
    denom = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return 0.0 if denom == 0 else float(np.linalg.norm(analytic - numeric) / denom)


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central difference of ``f`` with respect to every element of ``x`` (modified in place, restored)."""
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        orig = x[idx]
        x[idx] = orig + eps
        plus = f()
        x[idx] = orig - eps
        minus = f()
        x[idx] = orig
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(
    layer: Layer,
    x: np.ndarray,
    *,
    seed: int = 0,
    eps: float = 1e-5,
    train: bool = True,
) -> dict[str, float]:
    """Relative errors of ``layer``'s backward against numerical gradients.

    x : ndarray of shape (n, *input_shape); the layer is built for it in float64 if
    it was not built yet. Returns ``{"input": err, "<param>": err, ...}``; each should
    be below 1e-6 in float64.
    """
    x = np.array(x, dtype=np.float64)
    if not hasattr(layer, "dtype"):
        layer.build(x.shape[1:], np.random.default_rng(seed), np.float64)
    layer.needs_input_grad = True
    out_shape = (x.shape[0], *layer.output_shape(x.shape[1:]))
    projection = np.random.default_rng(seed + 1).standard_normal(out_shape)

    def f() -> float:
        layer.rng = np.random.default_rng(seed + 2)  # replay the same random draws (dropout)
        return float(np.sum(layer.forward(x, train) * projection))

    f()
    dx = np.array(layer.backward(projection.copy()), dtype=np.float64)
    analytic = {k: np.array(g, dtype=np.float64) for k, g in layer.grads.items()}
    errors = {"input": relative_error(dx, numerical_gradient(f, x, eps))}
    for key, param in layer.params.items():
        errors[key] = relative_error(analytic[key], numerical_gradient(f, param, eps))
    return errors


def gradcheck_eval(layer: Layer, x: np.ndarray, *, seed: int = 0, eps: float = 1e-5) -> dict[str, float]:
    """:func:`gradcheck` of the evaluation-mode function, after a training forward on other inputs.

    Backward after ``forward(x, train=False)`` must be the gradient of what that forward computed
    (input gradients of a trained net: saliency maps, adversarial examples), not reuse what the
    last training forward cached. The training forward also moves running statistics off their
    initial values, so a layer that uses them is checked with values that matter.
    """
    x = np.array(x, dtype=np.float64)
    if not hasattr(layer, "dtype"):
        layer.build(x.shape[1:], np.random.default_rng(seed), np.float64)
    other = 1.0 + 2.0 * np.random.default_rng(seed + 3).standard_normal(x.shape)
    layer.rng = np.random.default_rng(seed + 4)
    layer.forward(other, True)
    return gradcheck(layer, x, seed=seed, eps=eps, train=False)


def gradcheck_loss(loss: Loss, scores: np.ndarray, targets: np.ndarray, eps: float = 1e-5) -> float:
    """Relative error of ``loss.backward()`` against the numerical gradient of ``loss.forward``."""
    scores = np.array(scores, dtype=np.float64)
    loss.forward(scores.copy(), targets)
    analytic = np.array(loss.backward(), dtype=np.float64)
    numeric = numerical_gradient(lambda: loss.forward(scores.copy(), targets), scores, eps)
    return relative_error(analytic, numeric)
