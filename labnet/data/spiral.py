"""The spiral data set of "Deep Learning from Scratch" vol. 2, chapter 1: generated, no download.

Classes are interleaved spiral arms in the plane, so no linear model separates them: the
smallest data set on which a hidden layer visibly matters. It is labnet's default data set.
"""

import numpy as np
from numpy.typing import DTypeLike

from labnet.data.base import DataSplits, Split, carve_validation
from labnet.errors import ConfigError


def _check_int(key: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"dataset.{key}={value!r} is invalid: use an integer >= {low}")


def make_spiral(
    num_per_class: int,
    num_classes: int,
    noise: float,
    rng: np.random.Generator,
    dtype: DTypeLike = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """The book's spiral: for class j and i in 0..N-1, with rate = i / N and z ~ N(0, 1),
    theta = 4 j + 4 rate + noise z and the point is rate * (sin theta, cos theta).

    Returns
    -------
    x : ndarray of shape (num_classes * num_per_class, 2), class-major order
    y : ndarray of shape (num_classes * num_per_class,), int64 labels
    """
    rate = np.arange(num_per_class) / num_per_class  # (N,)
    z = rng.standard_normal((num_classes, num_per_class))  # drawn class by class, point by point
    theta = 4.0 * np.arange(num_classes)[:, None] + 4.0 * rate[None, :] + noise * z  # (C, N)
    radius = rate[None, :]
    x = np.stack([radius * np.sin(theta), radius * np.cos(theta)], axis=-1).reshape(-1, 2)
    y = np.repeat(np.arange(num_classes, dtype=np.int64), num_per_class)
    return x.astype(dtype), y


class Spiral:
    """Spiral arms of "Deep Learning from Scratch" vol. 2 (ch. 1), the default data set.

    Parameters
    ----------
    num_per_class : points per class (the book: 100)
    num_classes : number of spiral arms (the book: 3)
    noise : standard deviation of the angle noise (the book: 0.2)
    seed : seed of the points, so every run sees the same data set (the book seeds 1984);
        ``None`` draws them from the run's generator instead
    val_size : points split off (with the run's generator) as the validation set
    one_hot : labels as float one-hot rows instead of int64 class indices

    The training split holds all remaining points; there is no separate test split.
    """

    name = "spiral"

    def __init__(
        self,
        num_per_class: int = 100,
        num_classes: int = 3,
        noise: float = 0.2,
        seed: int | None = 1984,
        val_size: int = 0,
        one_hot: bool = False,
    ) -> None:
        _check_int("num_per_class", num_per_class, 1)
        _check_int("num_classes", num_classes, 2)
        _check_int("val_size", val_size, 0)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
            raise ConfigError(f"dataset.noise={noise!r} is invalid: use a number >= 0")
        if seed is not None:
            _check_int("seed", seed, 0)
        if val_size >= num_per_class * num_classes:
            raise ConfigError(
                f"dataset.val_size={val_size} leaves no training data: use 0 to "
                f"{num_per_class * num_classes - 1} (num_per_class * num_classes - 1)"
            )
        self.num_per_class = num_per_class
        self.num_classes = num_classes
        self.noise = float(noise)
        self.seed = seed
        self.val_size = val_size
        self.one_hot = bool(one_hot)

    def load(self, rng: np.random.Generator, dtype: DTypeLike = np.float32) -> DataSplits:
        """Train (and optionally val) splits: x (n, 2) ``dtype``, y (n,) int64 or (n, C) one-hot."""
        points_rng = rng if self.seed is None else np.random.default_rng(self.seed)
        x, y = make_spiral(self.num_per_class, self.num_classes, self.noise, points_rng, dtype)
        if self.one_hot:
            y = np.eye(self.num_classes, dtype=dtype)[y]
        train, val = carve_validation(Split(x, y), self.val_size, rng)
        return DataSplits(train=train, val=val, test=None, input_shape=(2,), num_classes=self.num_classes)
