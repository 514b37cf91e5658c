"""What every data set returns, and where data files live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """One split of a data set.

    x : ndarray of shape (n, *input_shape), float32 by default
    y : ndarray of shape (n,) integer labels, or (n, num_classes) one-hot float32
    """

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class DataSplits:
    """The arrays a data set's ``load(rng)`` returns, with what the model needs to know."""

    train: Split
    val: Split | None
    test: Split | None
    input_shape: tuple[int, ...]
    num_classes: int


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Folder holding data files: ``root``, else ``$LABNET_DATA_DIR``, else ``~/.cache/labnet``."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("LABNET_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "labnet"


def validation_indices(n: int, val_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """The sorted training and validation indices :func:`carve_validation` takes from ``n`` samples (None when
    ``val_size`` is 0): one permutation drawn from ``rng``."""
    if val_size <= 0:
        return None
    if val_size >= n:
        from labnet.errors import ConfigError

        raise ConfigError(
            f"dataset.val_size={val_size} leaves no training data: the training split has "
            f"{n} samples; use a value from 0 to {n - 1}"
        )
    order = rng.permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def carve_validation(train: Split, val_size: int, rng: np.random.Generator) -> tuple[Split, Split | None]:
    """Split ``val_size`` random samples off the training set (none when 0)."""
    carve = validation_indices(len(train), val_size, rng)
    if carve is None:
        return train, None
    train_idx, val_idx = carve
    return Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx])
