"""A data set that generates its data: no files, no download."""

from __future__ import annotations

import numpy as np
from labnet.data.base import DataSplits, Split
from labnet.errors import ConfigError
from numpy.typing import DTypeLike


class Moons:
    """Two interleaving half circles in the plane (like scikit-learn's ``make_moons``), 2 classes.

    Parameters
    ----------
    num_samples : points in all (half in each class, the outer moon gets the odd one)
    noise : standard deviation of the Gaussian noise added to every coordinate
    val_size : points held out as the validation split
    test_size : points held out as the test split
    one_hot : labels as float one-hot rows of shape (2,) instead of int64 class indices

    Points sit evenly along each moon; the noise and the shuffle before splitting come from the
    run's generator, so one seed gives the same data set every time.
    """

    name = "moons"

    def __init__(
        self,
        num_samples: int = 1000,
        noise: float = 0.1,
        val_size: int = 200,
        test_size: int = 200,
        one_hot: bool = False,
    ) -> None:
        for key, value, low in (
            ("num_samples", num_samples, 2),
            ("val_size", val_size, 0),
            ("test_size", test_size, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"dataset.{key}={value!r} is invalid: use an integer >= {low}")
        if val_size + test_size >= num_samples:
            raise ConfigError(
                f"dataset.val_size={val_size} + dataset.test_size={test_size} leave no training data "
                f"of num_samples={num_samples}; make their sum smaller than num_samples"
            )
        if not float(noise) >= 0:
            raise ConfigError(f"dataset.noise={noise!r} is invalid: use a number >= 0")
        self.num_samples, self.noise = num_samples, float(noise)
        self.val_size, self.test_size, self.one_hot = val_size, test_size, bool(one_hot)

    def load(self, rng: np.random.Generator, dtype: DTypeLike = np.float32) -> DataSplits:
        """x : (n, 2) ``dtype``; y : (n,) int64 in {0, 1}, or (n, 2) ``dtype`` if ``one_hot``."""
        n_outer = (self.num_samples + 1) // 2
        n_inner = self.num_samples - n_outer
        outer = np.linspace(0, np.pi, n_outer)
        inner = np.linspace(0, np.pi, n_inner)
        x = np.concatenate(
            [
                np.stack([np.cos(outer), np.sin(outer)], axis=1),  # upper moon, centre (0, 0)
                np.stack([1 - np.cos(inner), 0.5 - np.sin(inner)], axis=1),  # lower moon, centre (1, 0.5)
            ]
        )
        y = np.concatenate([np.zeros(n_outer, np.int64), np.ones(n_inner, np.int64)])
        x += self.noise * rng.standard_normal(x.shape)
        order = rng.permutation(self.num_samples)
        x, y = x[order].astype(dtype), y[order]
        if self.one_hot:
            y = np.eye(2, dtype=dtype)[y]
        n_test, n_val = self.test_size, self.val_size
        n_train = self.num_samples - n_test - n_val
        train = Split(x[:n_train], y[:n_train])
        val = Split(x[n_train : n_train + n_val], y[n_train : n_train + n_val]) if n_val else None
        test = Split(x[n_train + n_val :], y[n_train + n_val :]) if n_test else None
        return DataSplits(train=train, val=val, test=test, input_shape=(2,), num_classes=2)
