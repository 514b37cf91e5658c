"""Components the training studies need (registered by the studies plugin, :mod:`labnet.studies`).

- ``surface`` layer, ``value`` loss and ``function`` data set: minimising a 2-D function with
  labnet's optimizers, the book's figure 6-8 (ch. 6.1). The layer's parameters *are* the point
  ``(x, y)``; its output is ``f(x, y)``; the ``value`` loss is that output, so one training step
  is one optimizer step on ``f``.
- ``mnist_subset``: MNIST with a training split of ``train_size`` images (the book's 300- and
  1,000-sample studies), drawn with the run's generator after the validation split is carved off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from labnet.data.base import DataSplits, Split, carve_validation
from labnet.data.mnist import Mnist
from labnet.errors import ConfigError, ShapeError
from labnet.nn.layer import Layer
from labnet.nn.losses import Loss


@dataclass(frozen=True)
class Function2D:
    """A function of a point (x, y): its value, its gradient, where its minimum is, what to plot."""

    value: Callable[[float, float], float]
    gradient: Callable[[float, float], tuple[float, float]]
    minimum: tuple[float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    formula: str


#: the functions the ``surface`` layer offers, by the name used in ``{type: surface, f: NAME}``
FUNCTIONS: dict[str, Function2D] = {
    # the book's figure 6-8: elongated along x, so plain SGD zig-zags
    "ellipse": Function2D(
        lambda x, y: x * x / 20.0 + y * y,
        lambda x, y: (x / 10.0, 2.0 * y),
        (0.0, 0.0),
        (-10.0, 10.0),
        (-5.0, 5.0),
        "x²/20 + y²",
    ),
    "rosenbrock": Function2D(
        lambda x, y: (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2,
        lambda x, y: (-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)),
        (1.0, 1.0),
        (-2.0, 2.0),
        (-1.0, 3.0),
        "(1 - x)² + 100 (y - x²)²",
    ),
}


def function_named(name: str) -> Function2D:
    if name not in FUNCTIONS:
        raise ConfigError(f"surface f={name!r}: unknown function; accepted are {', '.join(sorted(FUNCTIONS))}")
    return FUNCTIONS[name]


class Surface(Layer):
    """A point (x, y) as the layer's parameters; the output is ``f(x, y)`` for every input row.

    x : ndarray of shape (n, *input_shape), ignored; out : ndarray of shape (n, 1), every row ``f(x, y)``.
    params : ``{"xy": ndarray of shape (2,)}``, initialised to ``(x0, y0)``.
    """

    name = "surface"

    def __init__(self, f: str = "ellipse", x0: float = -7.0, y0: float = 2.0) -> None:
        super().__init__()
        self.function = function_named(f)
        self.f, self.x0, self.y0 = f, float(x0), float(y0)

    def output_shape(self, input_shape):
        return (1,)

    def build(self, input_shape, rng, dtype):
        out = super().build(input_shape, rng, dtype)
        self.params = {"xy": np.array([self.x0, self.y0], dtype)}
        self.grads = {"xy": np.zeros(2, dtype)}
        return out

    def forward(self, x, train=True):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        px, py = (float(v) for v in self.params["xy"])
        return np.full((x.shape[0], 1), self.function.value(px, py), x.dtype)

    def backward(self, dout):
        px, py = (float(v) for v in self.params["xy"])
        gx, gy = self.function.gradient(px, py)
        total = float(np.sum(dout))
        self.grads["xy"][0], self.grads["xy"][1] = total * gx, total * gy
        if not self.needs_input_grad:
            return None
        return np.zeros(self.x_shape, self.x_dtype)  # the output does not depend on the input


class Value(Loss):
    """The model's output is the quantity to minimise: the batch mean of each row's sum.

    scores : ndarray of shape (n, k); targets: labels (n,) or one-hot (n, k), checked for shape, otherwise ignored.
    """

    name = "value"
    uses_targets = False

    def forward(self, scores, targets):
        targets = np.asarray(targets)
        if targets.shape[:1] != scores.shape[:1] or (targets.ndim == 2 and targets.shape != scores.shape):
            raise ShapeError(
                f"{self.name}: targets of shape {targets.shape} do not fit scores of shape {scores.shape}; "
                f"expected labels of shape ({scores.shape[0]},) or one-hot of shape {scores.shape}"
            )
        self.shape, self.dtype = scores.shape, scores.dtype
        return float(np.sum(scores) / scores.shape[0])

    def backward(self):
        return np.full(self.shape, 1.0 / self.shape[0], self.dtype)


class FunctionData:
    """The "data" of a function-minimisation run: ``size`` rows of zeros, one batch.

    The ``surface`` layer ignores its input and the ``value`` loss the labels (0, 1, 0, ...; two
    classes only so the data set contract holds), so with ``trainer.batch_size`` = ``size`` one
    epoch is one optimizer step on the function.
    """

    name = "function"

    def __init__(self, size: int = 2) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ConfigError(f"dataset.size={size!r} is invalid: use an integer >= 2")
        self.size = size

    def load(self, rng: np.random.Generator, dtype: DTypeLike = np.float32) -> DataSplits:
        x = np.zeros((self.size, 1), dtype)
        y = np.arange(self.size, dtype=np.int64) % 2
        return DataSplits(train=Split(x, y), val=None, test=None, input_shape=(1,), num_classes=2)


class MnistSubset(Mnist):
    """MNIST with a smaller training split (the book's small-data studies).

    Parameters
    ----------
    train_size : training images kept (``None``: all), drawn with the run's generator from what
        remains after the validation split, so the same seed gives the same images
    val_size : training images split off first as the validation set (held out, never trained on)

    The other options and the 10,000-image test split are MNIST's.
    """

    name = "mnist_subset"

    def __init__(
        self,
        train_size: int | None = 1000,
        val_size: int = 5000,
        normalize: bool = True,
        flatten: bool = True,
        one_hot: bool = False,
        root: str | None = None,
        download: bool = True,
    ) -> None:
        super().__init__(
            normalize=normalize, flatten=flatten, one_hot=one_hot, val_size=val_size, root=root, download=download
        )
        if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int)):
            raise ConfigError(f"dataset.train_size={train_size!r} is invalid: use a positive integer or null")
        if train_size is not None and train_size < 1:
            raise ConfigError(f"dataset.train_size={train_size!r} is invalid: use a positive integer or null")
        self.train_size = train_size

    def load(self, rng: np.random.Generator, dtype: DTypeLike = np.float32) -> DataSplits:
        raw = self.raw()
        # subsample the uint8 arrays before converting: 300 images, not 55,000, become floats
        train, val = carve_validation(Split(raw["train_images"], raw["train_labels"]), self.val_size, rng)
        if self.train_size is not None:
            if self.train_size > len(train):
                raise ConfigError(
                    f"dataset.train_size={self.train_size} is larger than the {len(train)} training images left "
                    f"after val_size={self.val_size}; use 1 to {len(train)}"
                )
            keep = np.sort(rng.choice(len(train), self.train_size, replace=False))
            train = Split(train.x[keep], train.y[keep])
        return self._splits(raw, train, val, dtype)
